package testenv

import (
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sync"
	"testing"
	"time"
)

// FaultProxy is a reverse proxy in front of a Registry that injects faults into the requests
// matching its rules and records every request, so that tests can count attempts. It serves
// HTTPS with a certificate from the registry's test CA when the registry serves HTTPS (clients
// trust it with the registry's CAFile), else plain HTTP; it forwards the Host header, so the
// registry's upload Locations point back at the proxy. It speaks HTTP/1.1 only, so that a
// connection can be reset in the middle of a request body.
type FaultProxy struct {
	// Host is 127.0.0.1:<port>: use it in references in place of the registry's Host.
	Host string

	target *url.URL
	rp     *httputil.ReverseProxy

	mu       sync.Mutex
	rules    []*faultRule
	requests []ProxiedRequest
}

// Fault is a rule: the requests matching Method and Path, after the first Skip of them, get the
// fault, Count times (0: every time). Set Status (with RetryAfter), Reset, or Delay alone.
type Fault struct {
	// Method matches the request method exactly; "" matches every method.
	Method string
	// Path is a regular expression matched against the URL path, such as
	// `/blobs/uploads/.+` or `/manifests/`; "" matches every path.
	Path string
	// Skip lets this many matching requests through before the fault applies.
	Skip int
	// Count is how many matching requests get the fault; 0 means all of them.
	Count int

	// Status answers with this status code and a distribution-style error body (codes
	// UNAVAILABLE for 503, TOOMANYREQUESTS for 429, DENIED for 403, UNAUTHORIZED for 401, else
	// UNKNOWN), after reading the request body. The request does not reach the registry.
	Status int
	// RetryAfter, with Status, sets the Retry-After header (seconds or an HTTP date).
	RetryAfter string
	// Header, with Status, sets more response headers, such as a Location.
	Header http.Header

	// Reset reads ResetAfter bytes of the request body (all of it when the body is shorter),
	// then resets the TCP connection (RST) without answering, as a proxy or load balancer
	// dropping an upload does.
	Reset      bool
	ResetAfter int64

	// Delay holds the request this long before the fault, or before forwarding it when the rule
	// sets neither Status nor Reset: a slow registry.
	Delay time.Duration
}

type faultRule struct {
	Fault
	path    *regexp.Regexp
	matched int
	applied int
}

// ProxiedRequest is a request the proxy saw.
type ProxiedRequest struct {
	Method string
	Path   string
	Query  url.Values
	// Status is the status the client got, from the registry or injected; 0 for a reset.
	Status int
	// Fault says what was injected: "" (forwarded), "status", "reset" or "delay".
	Fault string
	// Time is when the request arrived, End when the proxy was done with it.
	Time, End time.Time
}

// StartFaultProxy starts a proxy in front of reg for the test and closes it when the test ends.
func StartFaultProxy(t testing.TB, reg *Registry) *FaultProxy {
	t.Helper()
	target, err := url.Parse(reg.URL())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	p := &FaultProxy{target: target}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		Transport: reg.Client.Transport,
	}
	srv := httptest.NewUnstartedServer(p)
	if reg.TLS() {
		srv.TLS = &tls.Config{
			Certificates: []tls.Certificate{reg.ca.issue(t, "localhost", "127.0.0.1", "::1")},
			NextProtos:   []string{"http/1.1"},
			MinVersion:   tls.VersionTLS12,
		}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	p.Host = srv.Listener.Addr().String()
	t.Cleanup(srv.Close)
	return p
}

// Inject adds a fault rule. Rules are tried in the order added; the first that applies wins.
func (p *FaultProxy) Inject(t testing.TB, f Fault) {
	t.Helper()
	if f.Status == 0 && !f.Reset && f.Delay <= 0 {
		t.Fatalf("testenv: fault %+v sets neither Status, Reset nor Delay", f)
	}
	re, err := regexp.Compile(f.Path)
	if err != nil {
		t.Fatalf("testenv: fault path: %v", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, &faultRule{Fault: f, path: re})
}

// ClearFaults removes every rule.
func (p *FaultProxy) ClearFaults() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// Requests returns the requests seen so far, in the order they arrived.
func (p *FaultProxy) Requests() []ProxiedRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ProxiedRequest(nil), p.requests...)
}

// ResetRequests forgets the requests seen so far.
func (p *FaultProxy) ResetRequests() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = nil
}

// Count returns how many requests seen so far have method (or any, for "") and a path that
// pathRE matches (any, for "").
func (p *FaultProxy) Count(method, pathRE string) int {
	re := regexp.MustCompile(pathRE)
	n := 0
	for _, r := range p.Requests() {
		if (method == "" || r.Method == method) && re.MatchString(r.Path) {
			n++
		}
	}
	return n
}

// Summary lists the requests seen, one "METHOD path?query -> status (fault)" line each, for
// test logs.
func (p *FaultProxy) Summary() string {
	var b []byte
	for _, r := range p.Requests() {
		b = fmt.Appendf(b, "%s %s", r.Method, r.Path)
		q := maps.Clone(r.Query)
		delete(q, "_state") // distribution's opaque upload state: long and of no interest
		if len(q) > 0 {
			b = fmt.Appendf(b, "?%s", q.Encode())
		}
		b = fmt.Appendf(b, " -> %d", r.Status)
		if r.Fault != "" {
			b = fmt.Appendf(b, " (%s)", r.Fault)
		}
		b = append(b, '\n')
	}
	return string(b)
}

// fault returns the rule that applies to r, counting the match, or nil.
func (p *FaultProxy) fault(r *http.Request) *Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, rule := range p.rules {
		if rule.Method != "" && rule.Method != r.Method {
			continue
		}
		if !rule.path.MatchString(r.URL.Path) {
			continue
		}
		rule.matched++
		if rule.matched <= rule.Skip {
			continue
		}
		if rule.Count > 0 && rule.applied >= rule.Count {
			continue
		}
		rule.applied++
		f := rule.Fault
		return &f
	}
	return nil
}

func (p *FaultProxy) record(r *http.Request, start time.Time, status int, fault string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, ProxiedRequest{
		Method: r.Method,
		Path:   r.URL.Path,
		Query:  r.URL.Query(),
		Status: status,
		Fault:  fault,
		Time:   start,
		End:    time.Now(),
	})
}

// MaxConcurrent returns the largest number of requests with method (any, for "") and a path
// that pathRE matches (any, for "") that the proxy was handling at the same time.
func (p *FaultProxy) MaxConcurrent(method, pathRE string) int {
	re := regexp.MustCompile(pathRE)
	var reqs []ProxiedRequest
	for _, r := range p.Requests() {
		if (method == "" || r.Method == method) && re.MatchString(r.Path) {
			reqs = append(reqs, r)
		}
	}
	most := 0
	for _, a := range reqs {
		n := 0
		for _, b := range reqs {
			if !b.Time.After(a.Time) && b.End.After(a.Time) {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}

func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	f := p.fault(r)
	if f != nil && f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
		}
	}
	switch {
	case f == nil || (f.Status == 0 && !f.Reset):
		sw := &statusWriter{ResponseWriter: w}
		p.rp.ServeHTTP(sw, r)
		fault := ""
		if f != nil {
			fault = "delay"
		}
		p.record(r, start, sw.status, fault)
	case f.Reset:
		p.record(r, start, 0, "reset")
		p.reset(w, r, f.ResetAfter)
	default:
		// Read the body first, so that the client reads the answer instead of failing to write.
		_, _ = io.Copy(io.Discard, r.Body)
		p.record(r, start, f.Status, "status")
		for k, vs := range f.Header {
			w.Header()[k] = vs
		}
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
		w.WriteHeader(f.Status)
		fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"injected by the test's fault proxy: %d %s"}]}`+"\n",
			errorCode(f.Status), f.Status, http.StatusText(f.Status))
	}
}

// reset reads n bytes of the body, then drops the connection with a TCP RST.
func (p *FaultProxy) reset(w http.ResponseWriter, r *http.Request, n int64) {
	if n > 0 {
		_, _ = io.CopyN(io.Discard, r.Body, n)
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0) // close sends RST, not FIN
	}
	_ = raw.Close()
}

func errorCode(status int) string {
	switch status {
	case http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	case http.StatusTooManyRequests:
		return "TOOMANYREQUESTS"
	case http.StatusForbidden:
		return "DENIED"
	case http.StatusUnauthorized:
		return "UNAUTHORIZED"
	}
	return "UNKNOWN"
}

// statusWriter remembers the status written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
