package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
)

const (
	// buildkitdReadyTimeout bounds the wait for a test daemon to answer; one starts in about
	// a second here.
	buildkitdReadyTimeout = 30 * time.Second
	// buildkitdStopGrace is how long the cleanup waits after SIGTERM before SIGKILL.
	buildkitdStopGrace = 10 * time.Second
)

// StartBuildkitd starts buildkitd (Tool(t, "buildkitd")) with the OCI worker, a root in a
// temporary directory of its own and a unix socket, waits until it answers, and returns its
// address, unix:// and the socket's path. A cleanup stops it (SIGTERM, then SIGKILL after 10
// seconds) and, when the test failed, logs the end of its log. Each call starts a separate
// daemon. The test is skipped when buildkitd is missing (see Tool); it needs root.
func StartBuildkitd(t testing.TB) (addr string) {
	t.Helper()
	// A socket path must fit in 108 bytes; t.TempDir() names grow with the test's name.
	sockDir, err := os.MkdirTemp("", "gpuforge-bk-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	addr = "unix://" + filepath.Join(sockDir, "buildkitd.sock")
	startBuildkitd(t, addr, nil, nil)
	return addr
}

// TLSFiles are the PEM files of a test CA and of a server and a client certificate it signed.
type TLSFiles struct {
	CACert     string // the CA's certificate
	ServerCert string // the server's certificate, for 127.0.0.1 and localhost
	ServerKey  string // the server's private key
	ClientCert string // the client's certificate
	ClientKey  string // the client's private key
}

// StartBuildkitdTLS starts buildkitd as StartBuildkitd does, but listening on
// tcp://127.0.0.1:<a free port> with mutual TLS: it presents a certificate for 127.0.0.1 and
// accepts only clients with a certificate signed by the test CA. It returns the address and the
// files (see WriteTLSFiles).
func StartBuildkitdTLS(t testing.TB) (addr string, files TLSFiles) {
	t.Helper()
	files = WriteTLSFiles(t, t.TempDir())
	addr = "tcp://" + freeLoopbackPort(t)
	args := []string{"--tlscacert", files.CACert, "--tlscert", files.ServerCert, "--tlskey", files.ServerKey}
	copts := []client.ClientOpt{
		client.WithServerConfig("127.0.0.1", files.CACert),
		client.WithCredentials(files.ClientCert, files.ClientKey),
	}
	startBuildkitd(t, addr, args, copts)
	return addr, files
}

// startBuildkitd starts buildkitd listening on addr with extra arguments, and waits until a
// client with copts lists its workers.
func startBuildkitd(t testing.TB, addr string, extra []string, copts []client.ClientOpt) {
	t.Helper()
	bin := Tool(t, "buildkitd")
	dir := t.TempDir()
	logPath := filepath.Join(dir, "buildkitd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	args := append([]string{
		"--root", filepath.Join(dir, "root"),
		"--addr", addr,
		"--oci-worker=true",
		"--allow-insecure-entitlement=device",
		"--containerd-worker=false",
	}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Start()
	logf.Close()
	if err != nil {
		t.Fatalf("testenv: starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // buildkitd exits with status 1 after SIGTERM even when it shut down cleanly
		close(exited)
	}()
	// Registered after t.TempDir's removal, so it runs before it.
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(buildkitdStopGrace):
			t.Logf("testenv: buildkitd (pid %d) did not exit %v after SIGTERM; killing it", cmd.Process.Pid, buildkitdStopGrace)
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("testenv: the last lines of the log of buildkitd at %s:\n%s", addr, tail(logPath, 30))
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), buildkitdReadyTimeout)
	defer cancel()
	var last error
	for {
		if last = pingBuildkitd(ctx, addr, copts); last == nil {
			return
		}
		select {
		case <-exited:
			t.Fatalf("testenv: %s exited before it answered on %s (%v); its log:\n%s", bin, addr, cmd.ProcessState, tail(logPath, 30))
		case <-ctx.Done():
			t.Fatalf("testenv: %s did not answer on %s within %v: %v; its log:\n%s", bin, addr, buildkitdReadyTimeout, last, tail(logPath, 30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pingBuildkitd lists the workers of the daemon at addr on a connection of its own.
func pingBuildkitd(ctx context.Context, addr string, copts []client.ClientOpt) error {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if _, err := os.Stat(path); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := client.New(ctx, addr, copts...)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.ListWorkers(ctx)
	return err
}

// freeLoopbackPort returns 127.0.0.1:<port> for a port that was free a moment ago.
func freeLoopbackPort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WriteTLSFiles writes a new test CA, a server certificate for 127.0.0.1 and localhost and a
// client certificate, both signed by the CA, with their ECDSA P-256 keys, as PEM files in dir
// (ca.pem, server.pem, server-key.pem, client.pem, client-key.pem). They are valid for a day.
func WriteTLSFiles(t testing.TB, dir string) TLSFiles {
	t.Helper()
	files, err := writeTLSFiles(dir)
	if err != nil {
		t.Fatalf("testenv: writing TLS files: %v", err)
	}
	return files
}

func writeTLSFiles(dir string) (TLSFiles, error) {
	files := TLSFiles{
		CACert:     filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client-key.pem"),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return files, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "gpuforge test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return files, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return files, err
	}
	if err := writePEM(files.CACert, "CERTIFICATE", caDER); err != nil {
		return files, err
	}
	for _, leaf := range []struct {
		serial        int64
		name          string
		usage         x509.ExtKeyUsage
		cert, keyPath string
	}{
		{2, "buildkitd", x509.ExtKeyUsageServerAuth, files.ServerCert, files.ServerKey},
		{3, "gpuforge test client", x509.ExtKeyUsageClientAuth, files.ClientCert, files.ClientKey},
	} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return files, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(leaf.serial),
			Subject:      pkix.Name{CommonName: leaf.name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{leaf.usage},
		}
		if leaf.usage == x509.ExtKeyUsageServerAuth {
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
			tmpl.DNSNames = []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return files, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return files, err
		}
		if err := errors.Join(writePEM(leaf.cert, "CERTIFICATE", der), writePEM(leaf.keyPath, "PRIVATE KEY", keyDER)); err != nil {
			return files, err
		}
	}
	return files, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
