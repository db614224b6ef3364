package testenv

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestFaultProxyStatusRules(t *testing.T) {
	reg := StartRegistry(t)
	p := StartFaultProxy(t, reg)
	v2 := "https://" + p.Host + "/v2/"

	p.Inject(t, Fault{Method: http.MethodGet, Path: `^/v2/$`, Skip: 1, Count: 2, Status: http.StatusServiceUnavailable})
	p.Inject(t, Fault{Method: http.MethodGet, Path: `^/v2/$`, Count: 1, Status: http.StatusTooManyRequests, RetryAfter: "3"})

	var got []int
	var retryAfter []string
	for range 5 {
		req, _ := http.NewRequest(http.MethodGet, v2, nil)
		req.SetBasicAuth(reg.Username, reg.Password)
		resp, err := reg.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = append(got, resp.StatusCode)
		retryAfter = append(retryAfter, resp.Header.Get("Retry-After"))
		if resp.StatusCode == http.StatusServiceUnavailable && !bytes.Contains(body, []byte(`"UNAVAILABLE"`)) {
			t.Errorf("503 body %q: want a distribution error with code UNAVAILABLE", body)
		}
	}
	// Request 1 is skipped by rule 1 and matched by rule 2 (429); 2 and 3 get 503; then through.
	want := []int{429, 503, 503, 200, 200}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("statuses = %v, want %v\n%s", got, want, p.Summary())
		}
	}
	if retryAfter[0] != "3" {
		t.Errorf("Retry-After = %q, want 3", retryAfter[0])
	}
	if n := p.Count(http.MethodGet, `^/v2/$`); n != 5 {
		t.Errorf("Count(GET /v2/) = %d, want 5", n)
	}
	if n := p.Count(http.MethodPut, ""); n != 0 {
		t.Errorf("Count(PUT) = %d, want 0", n)
	}
	reqs := p.Requests()
	if reqs[3].Fault != "" || reqs[3].Status != 200 || reqs[1].Fault != "status" {
		t.Errorf("requests = %+v", reqs)
	}
	p.ResetRequests()
	if n := len(p.Requests()); n != 0 {
		t.Errorf("after ResetRequests, %d requests", n)
	}
}

func TestFaultProxyReset(t *testing.T) {
	reg := StartRegistry(t, RegistryPlainHTTP())
	p := StartFaultProxy(t, reg)
	p.Inject(t, Fault{Method: http.MethodPost, Path: `/upload`, Count: 1, Reset: true, ResetAfter: 1 << 10})

	body := bytes.Repeat([]byte("x"), 4<<20)
	_, err := reg.Client.Post("http://"+p.Host+"/upload", "application/octet-stream", bytes.NewReader(body))
	if err == nil {
		t.Fatal("POST through a reset: no error")
	}
	// What the client sees depends on whether it was writing or reading when the RST came.
	dropped := false
	for _, e := range []error{syscall.ECONNRESET, syscall.EPIPE, io.EOF, io.ErrUnexpectedEOF, net.ErrClosed} {
		dropped = dropped || errors.Is(err, e)
	}
	if !dropped {
		t.Errorf("error %v (%T) is none of ECONNRESET, EPIPE, EOF, unexpected EOF, net.ErrClosed", err, err)
	}
	// The rule is spent: the next request reaches the registry (404: no such path).
	resp, err := reg.Client.Post("http://"+p.Host+"/upload", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("second POST = %d, want the registry's 404", resp.StatusCode)
	}
	if n := p.Count(http.MethodPost, `/upload`); n != 2 {
		t.Errorf("Count = %d, want 2\n%s", n, p.Summary())
	}
	if r := p.Requests()[0]; r.Fault != "reset" || r.Status != 0 {
		t.Errorf("first request %+v: want a reset", r)
	}
}

func TestFaultProxyDelayAndConcurrency(t *testing.T) {
	reg := StartRegistry(t, RegistryPlainHTTP())
	p := StartFaultProxy(t, reg)
	p.Inject(t, Fault{Method: http.MethodGet, Path: `^/v2/$`, Delay: 200 * time.Millisecond})

	var wg sync.WaitGroup
	start := time.Now()
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := reg.Client.Get("http://" + p.Host + "/v2/")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("delayed GET = %d, want the registry's 200", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("3 delayed requests took %v, want at least the 200 ms delay", d)
	}
	if n := p.MaxConcurrent(http.MethodGet, `^/v2/$`); n != 3 {
		t.Errorf("MaxConcurrent = %d, want 3\n%s", n, p.Summary())
	}
	if r := p.Requests()[0]; r.Fault != "delay" || r.End.Sub(r.Time) < 200*time.Millisecond {
		t.Errorf("request %+v: want a delay of 200 ms recorded", r)
	}
}
