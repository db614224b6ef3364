package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Registry is a CNCF distribution registry (bin/registry, built by `make setup`) serving one
// test on a loopback port, with its storage in the test's temporary directory. By default it
// serves HTTPS with a certificate from a CA made for the test and requires htpasswd basic auth.
type Registry struct {
	// Host is 127.0.0.1:<port>, the registry part of references to it.
	Host string
	// Username and Password are the htpasswd credentials; both "" without auth.
	Username, Password string
	// CAFile is the PEM file of the CA that signed the server's certificate, CAPool that CA
	// alone; "" and nil for plain HTTP.
	CAFile string
	CAPool *x509.CertPool
	// Client trusts CAPool (and the system roots) and sends no credentials.
	Client *http.Client
	// Dir is the registry's storage root.
	Dir string

	ca  *registryCA
	log string
}

// URL returns the registry's base URL, https://Host or http://Host.
func (r *Registry) URL() string {
	if r.CAFile == "" {
		return "http://" + r.Host
	}
	return "https://" + r.Host
}

// Ref returns Host/repo, a reference to a repository of this registry (add :tag or @digest).
func (r *Registry) Ref(repo string) string { return r.Host + "/" + repo }

// TLS reports whether the registry serves HTTPS.
func (r *Registry) TLS() bool { return r.CAFile != "" }

// Log returns what the registry has written to its stdout and stderr so far.
func (r *Registry) Log() string {
	b, _ := os.ReadFile(r.log)
	return string(b)
}

// RegistryOption configures StartRegistry.
type RegistryOption func(*registryConfig)

type registryConfig struct {
	tls, auth          bool
	username, password string
}

// RegistryPlainHTTP serves plain HTTP without authentication.
//
// The default is HTTPS with htpasswd auth.
func RegistryPlainHTTP() RegistryOption {
	return func(c *registryConfig) { c.tls, c.auth = false, false }
}

// RegistryCredentials sets the htpasswd user and password.
//
// The default is user "gpuforge" and a random password.
func RegistryCredentials(username, password string) RegistryOption {
	return func(c *registryConfig) { c.username, c.password = username, password }
}

// registryStartAttempts bounds retries when the port picked was taken before the registry
// bound it.
const registryStartAttempts = 3

// StartRegistry starts a registry for the test and stops it when the test ends. It returns
// once GET /v2/ answers (401 with auth, 200 without).
func StartRegistry(t testing.TB, opts ...RegistryOption) *Registry {
	t.Helper()
	bin := Tool(t, "registry")
	cfg := registryConfig{tls: true, auth: true, username: "gpuforge", password: "pw-" + regRandomHex(t, 12)}
	for _, o := range opts {
		o(&cfg)
	}
	dir := t.TempDir()
	r := &Registry{Dir: filepath.Join(dir, "storage"), log: filepath.Join(dir, "registry.log")}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}

	var tlsBlock, authBlock string
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.tls {
		r.ca = newRegistryCA(t)
		r.CAFile = filepath.Join(dir, "ca.pem")
		regWriteFile(t, r.CAFile, r.ca.certPEM, 0o644)
		certPEM, keyPEM := r.ca.issuePEM(t, "localhost", "127.0.0.1", "::1")
		regWriteFile(t, filepath.Join(dir, "server.pem"), certPEM, 0o644)
		regWriteFile(t, filepath.Join(dir, "server-key.pem"), keyPEM, 0o600)
		r.CAPool = x509.NewCertPool()
		r.CAPool.AddCert(r.ca.cert)
		transport.TLSClientConfig = &tls.Config{RootCAs: r.CAPool, MinVersion: tls.VersionTLS12}
		tlsBlock = fmt.Sprintf("  tls:\n    certificate: %q\n    key: %q\n",
			filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	}
	if cfg.auth {
		r.Username, r.Password = cfg.username, cfg.password
		hash, err := bcrypt.GenerateFromPassword([]byte(cfg.password), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("testenv: bcrypt: %v", err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		regWriteFile(t, htpasswd, []byte(cfg.username+":"+string(hash)+"\n"), 0o600)
		authBlock = fmt.Sprintf("auth:\n  htpasswd:\n    realm: gpuforge-test\n    path: %q\n", htpasswd)
	}
	r.Client = &http.Client{Transport: transport, Timeout: 30 * time.Second}

	var lastErr error
	for attempt := 0; attempt < registryStartAttempts; attempt++ {
		r.Host = net.JoinHostPort("127.0.0.1", regFreePort(t))
		config := fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: %s
%s%s`, r.Dir, r.Host, regRandomHex(t, 16), tlsBlock, authBlock)
		cfgPath := filepath.Join(dir, "config.yml")
		regWriteFile(t, cfgPath, []byte(config), 0o644)
		stop, err := r.start(bin, cfgPath, cfg.auth)
		if err == nil {
			t.Cleanup(stop)
			return r
		}
		lastErr = err
	}
	t.Fatalf("testenv: starting %s: %v\n%s", bin, lastErr, regTail(r.Log(), 4000))
	return nil
}

// start runs the registry and waits until it answers. It returns how to stop it.
func (r *Registry) start(bin, cfgPath string, auth bool) (stop func(), err error) {
	logf, err := os.OpenFile(r.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// distribution v3 exports OpenTelemetry traces unless told not to.
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_SDK_DISABLED=true")
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	want := http.StatusOK
	if auth {
		want = http.StatusUnauthorized
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			return nil, fmt.Errorf("registry exited before answering: %v", err)
		default:
		}
		code, err := r.ping()
		if err == nil && code == want {
			return stop, nil
		}
		if err == nil {
			stop()
			return nil, fmt.Errorf("GET %s/v2/ answered %d, want %d", r.URL(), code, want)
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("GET %s/v2/: no answer in 30s: %v", r.URL(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *Registry) ping() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/v2/", nil)
	if err != nil {
		return 0, err
	}
	resp, err := r.Client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func regFreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

func regRandomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return hex.EncodeToString(b)
}

func regWriteFile(t testing.TB, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

func regTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// registryCA is a certificate authority made for one test.
type registryCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newRegistryCA(t testing.TB) *registryCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          regSerial(t),
		Subject:               pkix.Name{CommonName: "gpuforge test CA " + t.Name()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return &registryCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a server certificate for hosts (names and IP addresses).
func (ca *registryCA) issue(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	certPEM, keyPEM := ca.issuePEM(t, hosts...)
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return c
}

func (ca *registryCA) issuePEM(t testing.TB, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: regSerial(t),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func regSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return n
}
