package buildkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client"
)

// BuildkitHostEnv names the environment variable that gives the builder's address when
// WithAddress does not, as buildctl reads it.
const BuildkitHostEnv = "BUILDKIT_HOST"

// defaultConnectTimeout bounds the check that a builder answers.
const defaultConnectTimeout = 10 * time.Second

// A ConnectOption configures Connect.
type ConnectOption func(*connectOptions)

type connectOptions struct {
	address string
	tls     *tlsFiles
	daemon  []DaemonOption
	timeout time.Duration
}

type tlsFiles struct {
	caCert, cert, key, serverName string
}

// WithAddress sets the builder's address (gpuforge's --builder flag): unix:///path/to/socket or
// tcp://host:port. An empty address is no setting. The default is $BUILDKIT_HOST, else
// gpuforge's local daemon, started when it is not running (EnsureLocal).
func WithAddress(addr string) ConnectOption {
	return func(o *connectOptions) { o.address = addr }
}

// WithTLS makes Connect speak TLS to a tcp:// builder: caCert is the PEM file of the CA that
// signed the daemon's certificate (empty: the system's roots), cert and key the PEM files of the
// client certificate the daemon asks for (mTLS; both or neither), and serverName the name to
// verify the daemon's certificate against (empty: the address's host). The default is no TLS.
func WithTLS(caCert, cert, key, serverName string) ConnectOption {
	return func(o *connectOptions) {
		o.tls = &tlsFiles{caCert: caCert, cert: cert, key: key, serverName: serverName}
	}
}

// WithDaemonOptions sets the options EnsureLocal gets when Connect uses the local daemon. The
// default is none: EnsureLocal's defaults.
func WithDaemonOptions(opts ...DaemonOption) ConnectOption {
	return func(o *connectOptions) { o.daemon = append(o.daemon, opts...) }
}

// WithConnectTimeout sets how long Connect waits for the builder to answer. The default is 10
// seconds.
func WithConnectTimeout(d time.Duration) ConnectOption {
	return func(o *connectOptions) { o.timeout = d }
}

// AddressError says that a builder address cannot be used.
type AddressError struct {
	Address string // the address as given
	Reason  string // what is wrong with it
}

func (e *AddressError) Error() string {
	return fmt.Sprintf("invalid builder address %q: %s; use unix:///path/to/buildkitd.sock or tcp://host:port", e.Address, e.Reason)
}

// ConnectError says that the builder at Address did not answer.
type ConnectError struct {
	Address    string // the builder's address
	LogPath    string // the log of gpuforge's local daemon; empty for any other builder
	TLS        bool   // whether the connection used TLS
	ClientCert bool   // whether it presented a client certificate
	Err        error  // what the connection or the check returned
}

func (e *ConnectError) Error() string {
	switch {
	case e.LogPath != "":
		return fmt.Sprintf("cannot reach gpuforge's local buildkitd at %s: %v; its log is %s, and `gpuforge builder stop` stops it so that the next run starts a fresh one", e.Address, e.Err, e.LogPath)
	case !e.TLS && strings.HasPrefix(e.Address, "tcp://"):
		return fmt.Sprintf("cannot reach BuildKit at %s: %v; check that buildkitd listens there, and give --tlscacert, --tlscert and --tlskey if it uses TLS", e.Address, e.Err)
	case e.TLS && !e.ClientCert:
		// Without a client certificate a TLS 1.3 handshake "succeeds" and the daemon's
		// refusal may arrive only as a broken pipe; say what is missing.
		return fmt.Sprintf("cannot reach BuildKit at %s: %v; no client certificate was given, and a buildkitd started with --tlscacert requires one: give --tlscert and --tlskey", e.Address, e.Err)
	case e.TLS:
		return fmt.Sprintf("cannot reach BuildKit at %s: %v; check that buildkitd listens there, that --tlscacert is the CA that signed its certificate, and that --tlscert and --tlskey are a client certificate it accepts", e.Address, e.Err)
	default:
		return fmt.Sprintf("cannot reach BuildKit at %s: %v; check that buildkitd listens there and that this user may open the socket", e.Address, e.Err)
	}
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Connect returns a client of the builder: the address of WithAddress, else $BUILDKIT_HOST,
// else gpuforge's local daemon (EnsureLocal, started when it is not running). It checks that
// the builder answers (it lists its workers) and returns an *AddressError for an address it
// cannot use and a *ConnectError when the builder does not answer. The caller closes the client.
func Connect(ctx context.Context, opts ...ConnectOption) (*client.Client, error) {
	o := connectOptions{timeout: defaultConnectTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.timeout <= 0 {
		o.timeout = defaultConnectTimeout
	}
	addr := o.address
	if addr == "" {
		addr = os.Getenv(BuildkitHostEnv)
	}
	var local *Local
	if addr == "" {
		if o.tls != nil {
			return nil, errors.New("TLS settings apply to a tcp:// builder; with no builder address gpuforge uses its local daemon on a unix socket")
		}
		l, err := EnsureLocal(ctx, o.daemon...)
		if err != nil {
			return nil, err
		}
		local, addr = l, l.Address()
	}
	u, err := ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	var copts []client.ClientOpt
	if o.tls != nil {
		if u.Scheme != "tcp" {
			return nil, fmt.Errorf("TLS settings apply to a tcp:// builder, not %s", addr)
		}
		if (o.tls.cert == "") != (o.tls.key == "") {
			return nil, fmt.Errorf("builder %s: a TLS client certificate needs both its certificate and its key file", addr)
		}
		serverName := o.tls.serverName
		if serverName == "" {
			serverName = u.Hostname()
		}
		if o.tls.caCert != "" {
			copts = append(copts, client.WithServerConfig(serverName, o.tls.caCert))
		} else {
			copts = append(copts, client.WithServerConfigSystem(serverName))
		}
		if o.tls.cert != "" {
			copts = append(copts, client.WithCredentials(o.tls.cert, o.tls.key))
		}
	}
	c, err := client.New(ctx, addr, copts...)
	if err != nil {
		return nil, fmt.Errorf("builder %s: %w", addr, err)
	}
	cctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if _, err := c.ListWorkers(cctx); err != nil {
		c.Close()
		ce := &ConnectError{Address: addr, TLS: o.tls != nil, ClientCert: o.tls != nil && o.tls.cert != "", Err: err}
		if local != nil {
			ce.LogPath = local.LogPath()
		}
		return nil, ce
	}
	return c, nil
}

// ParseAddress checks a builder address and returns it parsed, or an *AddressError. It
// accepts unix:///absolute/path and tcp://host:port.
func ParseAddress(addr string) (*url.URL, error) {
	bad := func(format string, args ...any) (*url.URL, error) {
		return nil, &AddressError{Address: addr, Reason: fmt.Sprintf(format, args...)}
	}
	if addr == "" {
		return bad("it is empty")
	}
	u, err := url.Parse(addr)
	if err != nil {
		if _, _, err := net.SplitHostPort(addr); err == nil {
			return bad("it has no scheme; for a tcp builder write tcp://%s", addr)
		}
		return bad("%v", errors.Unwrap(err))
	}
	switch u.Scheme {
	case "unix":
		if u.Host != "" || !filepath.IsAbs(u.Path) {
			return bad("a unix socket address needs an absolute path after unix:// (three slashes in all)")
		}
		if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return bad("a unix socket address is unix:// and a path, nothing more")
		}
	case "tcp":
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || host == "" {
			return bad("a tcp address needs a host and a port")
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return bad("port %q is not a number from 1 to 65535", port)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return bad("a tcp address is tcp://host:port, nothing more")
		}
	case "":
		if filepath.IsAbs(addr) {
			return bad("it has no scheme; for a socket write unix://%s", addr)
		}
		return bad("it has no scheme")
	default:
		if u.Opaque != "" && u.Host == "" && u.Path == "" {
			// host:port parses as scheme "host" and opaque "port".
			if _, err := strconv.Atoi(u.Opaque); err == nil {
				return bad("it has no scheme; for a tcp builder write tcp://%s", addr)
			}
		}
		return bad("gpuforge does not support the %s:// scheme", u.Scheme)
	}
	return u, nil
}

// DaemonInfo is what a builder says about itself.
type DaemonInfo struct {
	Version client.BuildkitVersion // the daemon's BuildKit release
	Workers []*client.WorkerInfo   // its workers, the default first
}

// Platforms returns the platforms the workers build for, formatted as linux/amd64/v2, each
// once, in the order the workers list them.
func (i *DaemonInfo) Platforms() []string {
	var out []string
	seen := map[string]bool{}
	for _, w := range i.Workers {
		for _, p := range w.Platforms {
			s := platforms.Format(p)
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}

// Info asks the builder c for its BuildKit version and its workers.
func Info(ctx context.Context, c *client.Client) (*DaemonInfo, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("asking the builder for its version: %w", err)
	}
	workers, err := c.ListWorkers(ctx)
	if err != nil {
		return nil, fmt.Errorf("asking the builder for its workers: %w", err)
	}
	return &DaemonInfo{Version: info.BuildkitVersion, Workers: workers}, nil
}
