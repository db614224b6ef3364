package registry

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gpuforge/gpuforge/recipes"
)

// transport returns the innermost RoundTripper of an operation; go-containerregistry wraps it
// with its retries, user agent and authentication:
//
//	retryAfterTransport -> hostTransport (per-host TLS roots, plain-HTTP guard) -> http.Transport
func (o *options) transport() (http.RoundTripper, error) {
	ht := &hostTransport{
		plainHTTPAllowed: o.plainHTTPAllowed,
		pools:            map[string]*x509.CertPool{},
		byHost:           map[string]*http.Transport{},
	}
	// Read every CA file now, so that a missing or empty one fails the operation at once with
	// its path rather than as a TLS error on the first request.
	if len(o.caFiles) > 0 {
		pool, err := certPool(o.caFiles...)
		if err != nil {
			return nil, err
		}
		ht.all = pool
	}
	for _, b := range o.registries {
		if b == nil || b.CAFile == "" {
			continue
		}
		pool, err := certPool(append([]string{blockCAFile(b)}, o.caFiles...)...)
		if err != nil {
			return nil, fmt.Errorf("registry %q: %w", b.Name, err)
		}
		ht.pools[canonicalHost(b.Host)] = pool
	}
	return newRetryAfterTransport(ht, o.retryAfterCap), nil
}

// blockCAFile is a registry block's ca_file; a relative one is relative to the directory of the
// recipe file that declares the block, as paths given to file() are.
func blockCAFile(b *recipes.Registry) string {
	if filepath.IsAbs(b.CAFile) || b.DeclRange.Filename == "" {
		return b.CAFile
	}
	return filepath.Join(filepath.Dir(b.DeclRange.Filename), b.CAFile)
}

// certPool returns the system roots plus the certificates of the PEM files.
func certPool(files ...string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", f)
		}
	}
	return pool, nil
}

// hostTransport sends each request through an http.Transport for its host, whose TLS roots are
// the system's plus the CA files that apply to that host, and refuses plain HTTP to hosts that
// are not allowed it. go-containerregistry takes a single transport for all hosts, and its
// name.Insecure is not a guard: for any RFC 1918 address it falls back to HTTP by itself, and it
// follows a redirect to an http:// URL.
type hostTransport struct {
	plainHTTPAllowed func(host string) bool
	all              *x509.CertPool            // WithCAFile roots, for every host; nil: system roots
	pools            map[string]*x509.CertPool // per registry block with a ca_file

	mu     sync.Mutex
	byHost map[string]*http.Transport
}

var _ http.RoundTripper = (*hostTransport)(nil)

func (t *hostTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	if req.URL.Scheme == "http" && !t.plainHTTPAllowed(host) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, &plainHTTPError{host: host}
	}
	return t.forHost(host).RoundTrip(req)
}

func (t *hostTransport) forHost(host string) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr, ok := t.byHost[host]; ok {
		return tr
	}
	roots := t.all
	if p, ok := t.pools[host]; ok {
		roots = p
	}
	tr := newHTTPTransport(roots)
	t.byHost[host] = tr
	return tr
}

// newHTTPTransport is go-containerregistry's remote.DefaultTransport with TLS 1.2 at least and
// the given roots (nil: the system's).
func newHTTPTransport(roots *x509.CertPool) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   50,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
	}
}

// plainHTTPError is the refusal to send a request without TLS to a host that is not loopback
// and not marked insecure.
type plainHTTPError struct{ host string }

func (e *plainHTTPError) Error() string {
	return fmt.Sprintf("refusing plain HTTP to %s: only loopback hosts (localhost, 127.0.0.0/8, ::1) are reached without TLS unless the registry is marked insecure (--insecure, or insecure = true in its registry block)", e.host)
}

// isLoopback reports whether host (with an optional port) is localhost or a loopback address.
func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// retryAfterTransport honours Retry-After. go-containerregistry v0.22.1 retries 429 and 503 but
// never reads Retry-After (no match in pkg/ or internal/; containerd has the same gap,
// containerd#10447), so its next attempt comes after its own backoff, which a rate-limiting
// registry refuses again. When a 429 or 503 carries Retry-After, this transport holds every
// later request to that host until then (capped). It does not resend anything itself: the
// attempts stay those of ggcr's retry, so the two never multiply, and nothing waits when no
// further request follows.
type retryAfterTransport struct {
	inner http.RoundTripper
	cap   time.Duration
	now   func() time.Time

	mu        sync.Mutex
	notBefore map[string]time.Time
}

var _ http.RoundTripper = (*retryAfterTransport)(nil)

func newRetryAfterTransport(inner http.RoundTripper, limit time.Duration) *retryAfterTransport {
	return &retryAfterTransport{inner: inner, cap: limit, now: time.Now, notBefore: map[string]time.Time{}}
}

func (t *retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	t.mu.Lock()
	until := t.notBefore[host]
	t.mu.Unlock()
	if wait := until.Sub(t.now()); wait > 0 {
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-req.Context().Done():
			timer.Stop()
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, req.Context().Err()
		}
	}
	resp, err := t.inner.RoundTrip(req)
	if err != nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return resp, err
	}
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), t.now()); ok {
		d = min(d, t.cap)
		t.mu.Lock()
		if next := t.now().Add(d); next.After(t.notBefore[host]) {
			t.notBefore[host] = next
		}
		t.mu.Unlock()
	}
	return resp, nil
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP-date (RFC 9110 10.2.3).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		if n > int64(24*time.Hour/time.Second) {
			n = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}
