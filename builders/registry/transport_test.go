package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/hashicorp/hcl/v2"

	"github.com/gpuforge/gpuforge/recipes"
)

// TestPlainHTTPRefusedForNonLoopback checks the guard without touching the network: a refused
// request fails before any connection; an allowed one gets as far as dialling, which a
// cancelled context stops at once.
func TestPlainHTTPRefusedForNonLoopback(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	blocks := []*recipes.Registry{{Name: "lab", Host: "registry.lab.internal:5000", Insecure: true}}
	for _, tc := range []struct {
		url     string
		opts    []Option
		refused bool
	}{
		{"http://registry.example.com/v2/", nil, true},
		{"http://10.1.2.3:5000/v2/", nil, true}, // ggcr itself would fall back to HTTP for RFC 1918
		{"http://192.168.1.10/v2/", nil, true},
		{"http://registry.localhost:5000/v2/", nil, true},
		{"http://registry.lab.internal/v2/", []Option{WithRegistries(blocks)}, true}, // the block has a port
		{"http://registry.lab.internal:5000/v2/", []Option{WithRegistries(blocks)}, false},
		{"http://registry.example.com/v2/", []Option{WithInsecure(true)}, false},
		{"http://localhost:5000/v2/", nil, false},
		{"http://127.0.0.1:5000/v2/", nil, false},
		{"http://127.1.2.3:5000/v2/", nil, false},
		{"http://[::1]:5000/v2/", nil, false},
		{"https://registry.example.com/v2/", nil, false},
	} {
		rt, err := makeOptions(tc.opts).transport()
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequestWithContext(cancelled, http.MethodGet, tc.url, nil)
		_, err = rt.RoundTrip(req)
		var pe *plainHTTPError
		if refused := errors.As(err, &pe); refused != tc.refused {
			t.Errorf("%s %v: err = %v; refused %v, want %v", tc.url, tc.opts, err, refused, tc.refused)
			continue
		}
		if tc.refused {
			if host := req.URL.Host; !strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), "insecure") {
				t.Errorf("refusal %q should name %s and say how to allow it", err, host)
			}
			if retryable(err) {
				t.Errorf("a refusal is retryable")
			}
		} else if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: err = %v, want the cancelled dial", tc.url, err)
		}
	}
}

func TestParseRefMarksLoopbackInsecure(t *testing.T) {
	for _, tc := range []struct {
		ref    string
		opts   []Option
		scheme string
	}{
		{"127.0.0.1:5000/a/b:v1", nil, "http"},
		{"127.0.0.2:5000/a/b:v1", nil, "http"},
		{"localhost/a/b:v1", nil, "http"},
		{"[::1]:5000/a/b:v1", nil, "http"},
		{"registry.example.com/a/b:v1", nil, "https"},
		{"10.0.0.1:5000/a/b:v1", nil, "http"}, // ggcr's own choice; the transport guard refuses the HTTP
		{"registry.example.com/a/b:v1", []Option{WithInsecure(true)}, "http"},
		{"lab:5000/a/b:v1", []Option{WithRegistries([]*recipes.Registry{{Host: "lab:5000", Insecure: true}})}, "http"},
	} {
		r, err := makeOptions(tc.opts).parseRef(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Context().Scheme(); got != tc.scheme {
			t.Errorf("parseRef(%s) scheme %s, want %s", tc.ref, got, tc.scheme)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "localhost:5000": true, "LOCALHOST:1": true,
		"127.0.0.1": true, "127.0.0.1:5000": true, "127.255.0.9:80": true,
		"::1": true, "[::1]:5000": true,
		"10.0.0.1:5000": false, "example.com": false, "localhost.example.com": false,
		"128.0.0.1": false, "[::2]:5000": false, "": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestCAFileErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		opts []Option
		want string
	}{
		{[]Option{WithCAFile(filepath.Join(dir, "missing.pem"))}, "missing.pem"},
		{[]Option{WithCAFile(empty)}, "holds no PEM certificate"},
		{[]Option{WithRegistries([]*recipes.Registry{{Name: "corp", Host: "r.example.com", CAFile: empty}})}, `registry "corp"`},
	} {
		_, err := makeOptions(tc.opts).transport()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("transport() err = %v, want one containing %q", err, tc.want)
		}
	}
	// Through an operation, the failure is an *Error before any request.
	_, err := Inspect(context.Background(), "r.example.com/a:b", WithCAFile(empty))
	var e *Error
	if !errors.As(err, &e) || e.Host != "r.example.com" {
		t.Errorf("Inspect with a bad CA file: %v", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"1", time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"0", 0, true},
		{"-1", 0, false},
		{"", 0, false},
		{"soon", 0, false},
		{"Sat, 28 Nov 2026 12:00:30 GMT", 30 * time.Second, true},
		{"Sat, 28 Nov 2026 11:00:00 GMT", 0, true}, // in the past: no wait
		{"99999999999", 24 * time.Hour, true},
	} {
		got, ok := parseRetryAfter(tc.v, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.v, got, ok, tc.want, tc.ok)
		}
	}
}

// scripted answers each request with the next status of its script, with Retry-After when set.
type scripted struct {
	statuses   []int
	retryAfter string
	calls      atomic.Int32
}

func (s *scripted) RoundTrip(req *http.Request) (*http.Response, error) {
	i := int(s.calls.Add(1)) - 1
	code := s.statuses[min(i, len(s.statuses)-1)]
	h := http.Header{}
	if s.retryAfter != "" {
		h.Set("Retry-After", s.retryAfter)
	}
	return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader("")), Request: req}, nil
}

// TestRetryAfterHoldsNextRequest: after a 429 with Retry-After, the next request to that host
// waits (up to the cap); other hosts do not; nothing is resent by the wrapper itself.
func TestRetryAfterHoldsNextRequest(t *testing.T) {
	inner := &scripted{statuses: []int{429, 200, 200}, retryAfter: "1"}
	rt := newRetryAfterTransport(inner, 300*time.Millisecond)
	get := func(url string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if r := get("https://a.example/v2/"); r.StatusCode != 429 {
		t.Fatalf("first = %d, want the 429 passed through", r.StatusCode)
	}
	if n := inner.calls.Load(); n != 1 {
		t.Fatalf("%d calls after a 429, want 1: the wrapper must not resend", n)
	}
	start := time.Now()
	get("https://b.example/v2/")
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("another host waited %v", d)
	}
	start = time.Now()
	get("https://a.example/v2/")
	if d := time.Since(start); d < 250*time.Millisecond || d > 900*time.Millisecond {
		t.Errorf("the next request to the host waited %v, want the 300 ms cap (Retry-After: 1 s)", d)
	}

	// A cancelled context ends the wait.
	inner2 := &scripted{statuses: []int{503, 200}, retryAfter: "30"}
	rt2 := newRetryAfterTransport(inner2, time.Minute)
	req, _ := http.NewRequest(http.MethodGet, "https://a.example/v2/", nil)
	if _, err := rt2.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "https://a.example/v2/", nil)
	if _, err := rt2.RoundTrip(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait with a context that ends: err = %v", err)
	}
}

func TestRetryable(t *testing.T) {
	status := func(code int) error { return &transport.Error{StatusCode: code} }
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status(500), true}, {status(502), true}, {status(503), true}, {status(504), true},
		{status(429), true}, {status(408), true},
		{status(400), false}, {status(401), false}, {status(403), false}, {status(404), false},
		{status(405), false}, {status(409), false}, {status(501), false}, {status(505), false},
		{&transport.Error{StatusCode: 400, Errors: []transport.Diagnostic{{Code: transport.BlobUploadInvalidErrorCode}}}, false},
		{fmt.Errorf("patch: %w", syscall.ECONNRESET), true},
		{fmt.Errorf("patch: %w", syscall.EPIPE), true},
		{io.ErrUnexpectedEOF, true},
		{context.Canceled, false},
		{context.DeadlineExceeded, false},
		{errors.New("x509: certificate signed by unknown authority"), false},
		{&plainHTTPError{host: "example.com"}, false},
		{nil, false},
	} {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	codes := retryStatusCodes()
	if len(codes) != 2+98 || codes[0] != 408 || codes[1] != 429 {
		t.Errorf("retryStatusCodes() = %v", codes)
	}
}

func TestBlockCAFileRelativeToRecipe(t *testing.T) {
	for _, tc := range []struct {
		ca, file, want string
	}{
		{"certs/ca.pem", filepath.Join("recipes", "app", "main.hcl"), filepath.Join("recipes", "app", "certs", "ca.pem")},
		{"/etc/ssl/corp.pem", filepath.Join("recipes", "main.hcl"), "/etc/ssl/corp.pem"},
		{"ca.pem", "", "ca.pem"},
	} {
		b := &recipes.Registry{CAFile: tc.ca, DeclRange: hcl.Range{Filename: tc.file}}
		if got := blockCAFile(b); got != tc.want {
			t.Errorf("blockCAFile(%q in %q) = %q, want %q", tc.ca, tc.file, got, tc.want)
		}
	}
}
