package registry

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/gpuforge/gpuforge/internal/testenv"
)

// pushThroughFaults pushes a fresh two-platform index through a fault proxy set up by inject,
// checks that the push succeeded with the right digest and that the registry holds every blob
// intact, and returns the proxy for counting.
func pushThroughFaults(t *testing.T, layerSize int64, inject func(p *testenv.FaultProxy), opts ...Option) (*testenv.FaultProxy, time.Duration) {
	t.Helper()
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartFaultProxy(t, reg)
	idx := testIndex(t, 2, layerSize, "linux/amd64", "linux/arm64")
	want := digestOf(t, idx)
	dir := writeLayout(t, idx, "")
	inject(proxy)

	start := time.Now()
	got, err := Push(ctxFor(t), dir, proxy.Host+"/ml/faulty:v1", append(testOpts(reg, proxy.Host), opts...)...)
	elapsed := time.Since(start)
	t.Logf("push took %v; requests:\n%s", elapsed, proxy.Summary())
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	if got.DigestStr() != want.String() {
		t.Errorf("Push = %s, want %s", got.DigestStr(), want)
	}
	pulled, err := remote.Index(mustRef(t, reg.Ref("ml/faulty:v1")), pullOpts(t, reg)...)
	if err != nil {
		t.Fatal(err)
	}
	if d := digestOf(t, pulled); d != want {
		t.Errorf("registry serves %s, want %s", d, want)
	}
	if err := validate.Index(pulled); err != nil {
		t.Errorf("pushed index does not validate (a corrupt blob?): %v", err)
	}
	return proxy, elapsed
}

func countFaults(p *testenv.FaultProxy, method, path, fault string) int {
	n := 0
	for _, r := range p.Requests() {
		if r.Method == method && strings.Contains(r.Path, path) && r.Fault == fault {
			n++
		}
	}
	return n
}

// TestPushRetries503OnBlobUploads: the first two PATCH and the first two PUT of blob uploads
// answer 503; each failed upload is restarted and the push completes.
func TestPushRetries503OnBlobUploads(t *testing.T) {
	p, _ := pushThroughFaults(t, 32<<10, func(p *testenv.FaultProxy) {
		p.Inject(t, testenv.Fault{Method: http.MethodPatch, Path: pathUploads, Count: 2, Status: http.StatusServiceUnavailable})
		p.Inject(t, testenv.Fault{Method: http.MethodPut, Path: pathUploads, Count: 2, Status: http.StatusServiceUnavailable})
	})
	if n := countFaults(p, http.MethodPatch, pathUploads, "status"); n != 2 {
		t.Errorf("%d PATCH got 503, want 2", n)
	}
	if n := countFaults(p, http.MethodPut, pathUploads, "status"); n != 2 {
		t.Errorf("%d blob PUT got 503, want 2", n)
	}
	// 6 blobs (2 images × (2 layers + config)); a failed PATCH or PUT restarts the upload.
	if n := p.Count(http.MethodPut, pathUploads); n != 6+2 {
		t.Errorf("%d blob PUTs, want 8 (6 blobs, 2 of them retried after a 503 on PUT)", n)
	}
	if n := p.Count(http.MethodPatch, pathUploads); n != 6+2+2 {
		t.Errorf("%d PATCHes, want 10 (6 blobs, 2 retried after a 503 on PATCH, 2 after one on PUT)", n)
	}
}

// TestPushHonoursRetryAfter: the manifest PUT answers 429 with Retry-After: 1. The backoff is
// 10 ms, so only Retry-After can make the next PUT wait a second.
func TestPushHonoursRetryAfter(t *testing.T) {
	p, elapsed := pushThroughFaults(t, 16<<10, func(p *testenv.FaultProxy) {
		p.Inject(t, testenv.Fault{Method: http.MethodPut, Path: pathManifests, Count: 1, Status: http.StatusTooManyRequests, RetryAfter: "1"})
	})
	if elapsed < time.Second {
		t.Errorf("push took %v, want at least the 1 s of Retry-After", elapsed)
	}
	// The PUT that got the 429 and its retry (other manifests' PUTs may run alongside).
	var puts []testenv.ProxiedRequest
	for _, r := range p.Requests() {
		if r.Method == http.MethodPut && strings.Contains(r.Path, pathManifests) &&
			(len(puts) == 0 && r.Status == http.StatusTooManyRequests || len(puts) > 0 && r.Path == puts[0].Path) {
			puts = append(puts, r)
		}
	}
	if len(puts) != 2 || puts[1].Status != http.StatusCreated {
		t.Fatalf("manifest PUTs %+v: want a 429, then one retry of the same PUT that succeeds", puts)
	}
	if gap := puts[1].Time.Sub(puts[0].End); gap < 950*time.Millisecond {
		t.Errorf("the manifest PUT was retried %v after the 429, want ≥ 1 s (Retry-After: 1)", gap)
	}
}

// TestPushRetriesResetMidUpload: the connection of the first blob PATCH is reset after 64 KiB of
// a 512 KiB layer; the upload restarts and the registry ends up with intact blobs.
func TestPushRetriesResetMidUpload(t *testing.T) {
	p, _ := pushThroughFaults(t, 512<<10, func(p *testenv.FaultProxy) {
		p.Inject(t, testenv.Fault{Method: http.MethodPatch, Path: pathUploads, Count: 1, Reset: true, ResetAfter: 64 << 10})
	}, WithJobs(1))
	if n := countFaults(p, http.MethodPatch, pathUploads, "reset"); n != 1 {
		t.Errorf("%d PATCH were reset, want 1", n)
	}
	if n := p.Count(http.MethodPatch, pathUploads); n != 6+1 {
		t.Errorf("%d PATCHes, want 7 (6 blobs, one sent twice)", n)
	}
}

// TestPushForbiddenFailsAtOnce: a 403 on the manifest PUT is not retried; the error names the
// registry and repository, is an auth error, and carries no credential.
func TestPushForbiddenFailsAtOnce(t *testing.T) {
	logs := captureGGCRLogs(t)
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartFaultProxy(t, reg)
	dir := writeLayout(t, testIndex(t, 1, 8<<10, "linux/amd64"), "")
	proxy.Inject(t, testenv.Fault{Method: http.MethodPut, Path: pathManifests, Status: http.StatusForbidden})

	_, err := Push(ctxFor(t), dir, proxy.Host+"/team/denied:v1", testOpts(reg, proxy.Host)...)
	if err == nil {
		t.Fatal("push through a 403: no error")
	}
	t.Logf("error: %v", err)
	if n := proxy.Count(http.MethodPut, pathManifests); n != 1 {
		t.Errorf("%d manifest PUTs, want exactly 1 (403 is final)\n%s", n, proxy.Summary())
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T is not *Error", err)
	}
	if e.Kind != KindAuth || !errors.Is(err, ErrAuth) || e.StatusCode != http.StatusForbidden || e.Temporary() {
		t.Errorf("Kind %v, status %d, temporary %v: want an auth error from a 403", e.Kind, e.StatusCode, e.Temporary())
	}
	if e.Host != proxy.Host || e.Repository != "team/denied" {
		t.Errorf("Host %q, Repository %q; want %q, team/denied", e.Host, e.Repository, proxy.Host)
	}
	if msg := err.Error(); !strings.Contains(msg, proxy.Host+"/team/denied") || !strings.Contains(msg, "authentication denied") {
		t.Errorf("message %q does not name %s/team/denied and the kind", msg, proxy.Host)
	}
	assertNoSecret(t, "error", err.Error(), reg.Username, reg.Password)
	assertNoSecret(t, "go-containerregistry's logs", logs.String(), reg.Username, reg.Password)
	if !strings.Contains(logs.String(), "PUT") {
		t.Errorf("the debug log captured nothing; the redaction check is void")
	}
}

// TestPushWrongPassword: wrong credentials give an auth error naming the host, without the
// password in the message or in go-containerregistry's debug log.
func TestPushWrongPassword(t *testing.T) {
	logs := captureGGCRLogs(t)
	reg := testenv.StartRegistry(t)
	const canary = "canary-Pa55word-7f3a9c"
	wrong := *reg
	wrong.Password = canary
	dir := writeLayout(t, testIndex(t, 1, 8<<10, "linux/amd64"), "")

	_, err := Push(ctxFor(t), dir, reg.Ref("team/app:v1"), testOpts(&wrong)...)
	if err == nil {
		t.Fatal("push with a wrong password: no error")
	}
	t.Logf("error: %v", err)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindAuth || !errors.Is(err, ErrAuth) {
		t.Fatalf("error %v (%T): want an *Error of kind auth", err, err)
	}
	if e.Host != reg.Host || !strings.Contains(err.Error(), reg.Host) {
		t.Errorf("error does not name the host %s: %v", reg.Host, err)
	}
	assertNoSecret(t, "error", err.Error(), reg.Username, canary)
	assertNoSecret(t, "go-containerregistry's logs", logs.String(), reg.Username, canary)
	if !strings.Contains(logs.String(), "GET") {
		t.Errorf("the debug log captured nothing; the redaction check is void")
	}
}

// TestPushGivesUpAfterAttempts: a registry that always answers 503 is tried a bounded number
// of times, and the error is transient.
func TestPushGivesUpAfterAttempts(t *testing.T) {
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartFaultProxy(t, reg)
	dir := writeLayout(t, testIndex(t, 1, 8<<10, "linux/amd64"), "")
	proxy.Inject(t, testenv.Fault{Method: http.MethodPut, Path: pathManifests, Status: http.StatusServiceUnavailable})

	_, err := Push(ctxFor(t), dir, proxy.Host+"/team/flaky:v1", append(testOpts(reg, proxy.Host), WithRetry(3, time.Millisecond))...)
	if !errors.Is(err, ErrTransient) {
		t.Fatalf("err = %v; want a transient *Error", err)
	}
	if n := proxy.Count(http.MethodPut, pathManifests); n != 3 {
		t.Errorf("%d manifest PUTs, want 3 (WithRetry(3, …))\n%s", n, proxy.Summary())
	}
}

// TestPushRefusesLinkLocalRedirect: an upload Location pointing at another host on a private or
// link-local address (an instance metadata endpoint) is refused before anything is sent there,
// and not retried.
func TestPushRefusesLinkLocalRedirect(t *testing.T) {
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartFaultProxy(t, reg)
	dir := writeLayout(t, testIndex(t, 1, 8<<10, "linux/amd64"), "")
	proxy.Inject(t, testenv.Fault{Method: http.MethodPost, Path: pathUploads, Status: http.StatusAccepted,
		Header: http.Header{"Location": {"https://169.254.169.254/latest/meta-data/iam/"}}})

	_, err := Push(ctxFor(t), dir, proxy.Host+"/team/ssrf:v1", append(testOpts(reg, proxy.Host), WithJobs(1))...)
	if err == nil || !strings.Contains(err.Error(), "169.254.169.254") {
		t.Fatalf("err = %v; want a refusal naming the link-local host", err)
	}
	t.Logf("error: %v", err)
	if n := proxy.Count(http.MethodPost, pathUploads); n != 1 {
		t.Errorf("%d upload POSTs, want 1 (a refused redirect is not retried)\n%s", n, proxy.Summary())
	}
	if n := proxy.Count(http.MethodPatch, ""); n != 0 {
		t.Errorf("%d PATCHes reached the registry", n)
	}
}
