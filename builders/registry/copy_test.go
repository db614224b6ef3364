package registry

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/gpuforge/gpuforge/internal/testenv"
)

// TestCopyWithinRegistryMountsBlobs copies an index between two repositories of one registry:
// the digest is kept and every blob is mounted from the source repository, none uploaded.
func TestCopyWithinRegistryMountsBlobs(t *testing.T) {
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartFaultProxy(t, reg)
	idx := testIndex(t, 2, 32<<10, "linux/amd64", "linux/arm64")
	want := digestOf(t, idx)
	opts := testOpts(reg, proxy.Host)
	if _, err := Push(ctxFor(t), writeLayout(t, idx, ""), proxy.Host+"/team/src:v1", opts...); err != nil {
		t.Fatal(err)
	}

	proxy.ResetRequests()
	got, err := Copy(ctxFor(t), proxy.Host+"/team/src:v1", proxy.Host+"/team/dst:v1", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("copy requests:\n%s", proxy.Summary())
	if got.DigestStr() != want.String() || got.Context().RepositoryStr() != "team/dst" {
		t.Errorf("Copy = %s, want team/dst@%s", got, want)
	}
	// 6 blobs: 2 images × (2 layers + config).
	mounted := 0
	for _, r := range proxy.Requests() {
		if r.Method == http.MethodPost && strings.Contains(r.Path, pathUploads) && r.Query.Get("mount") != "" {
			if r.Query.Get("from") != "team/src" || r.Status != http.StatusCreated {
				t.Errorf("mount request %+v: want from=team/src answered 201", r)
			}
			mounted++
		}
	}
	if mounted != 6 {
		t.Errorf("%d blobs mounted, want 6", mounted)
	}
	if n := proxy.Count(http.MethodPatch, pathUploads); n != 0 {
		t.Errorf("%d blobs uploaded (PATCH), want 0: all should be mounted", n)
	}
	pulled, err := remote.Index(mustRef(t, reg.Ref("team/dst:v1")), pullOpts(t, reg)...)
	if err != nil {
		t.Fatal(err)
	}
	if d := digestOf(t, pulled); d != want {
		t.Errorf("team/dst:v1 is %s, want %s", d, want)
	}
	if err := validate.Index(pulled); err != nil {
		t.Errorf("copied index does not validate: %v", err)
	}
}

// TestCopyBetweenRegistries copies every platform of an index from the TLS+auth registry to a
// plain-HTTP one on loopback, and an image back by digest.
func TestCopyBetweenRegistries(t *testing.T) {
	src := testenv.StartRegistry(t)
	dst := testenv.StartRegistry(t, testenv.RegistryPlainHTTP())
	dstProxy := testenv.StartFaultProxy(t, dst)
	idx := testIndex(t, 2, 16<<10, "linux/amd64", "linux/arm64", "linux/arm/v7")
	want := digestOf(t, idx)
	opts := testOpts(src)
	if _, err := Push(ctxFor(t), writeLayout(t, idx, ""), src.Ref("ml/trainer:v1"), opts...); err != nil {
		t.Fatal(err)
	}

	got, err := Copy(ctxFor(t), src.Ref("ml/trainer:v1"), dstProxy.Host+"/mirror/trainer:v1", opts...)
	if err != nil {
		t.Fatal(err)
	}
	if got.DigestStr() != want.String() {
		t.Errorf("Copy = %s, want digest %s", got, want)
	}
	if n := dstProxy.Count(http.MethodPatch, pathUploads); n != 9 {
		t.Errorf("%d blobs uploaded to the other registry, want 9 (3 images × (2 layers + config))\n%s", n, dstProxy.Summary())
	}
	pulled, err := remote.Index(mustRef(t, dst.Ref("mirror/trainer:v1")), pullOpts(t, dst)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(pulled); err != nil {
		t.Errorf("copied index does not validate: %v", err)
	}
	im, _ := pulled.IndexManifest()
	if len(im.Manifests) != 3 || digestOf(t, pulled) != want {
		t.Errorf("copied index %s has %d manifests, want %s with 3", digestOf(t, pulled), len(im.Manifests), want)
	}

	// One platform's image, by digest, back into the first registry.
	child := im.Manifests[1].Digest.String()
	got, err = Copy(ctxFor(t), dst.Ref("mirror/trainer@"+child), src.Ref("ml/arm64:v1"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if got.DigestStr() != child {
		t.Errorf("Copy of an image = %s, want %s", got.DigestStr(), child)
	}
}

// TestCopyMissingSource: copying a tag that does not exist is a not-found error naming the
// source repository.
func TestCopyMissingSource(t *testing.T) {
	reg := testenv.StartRegistry(t)
	_, err := Copy(ctxFor(t), reg.Ref("team/nothing:v1"), reg.Ref("team/dst:v1"), testOpts(reg)...)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindNotFound || !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v; want a not-found *Error", err)
	}
	if e.Host != reg.Host || e.Repository != "team/nothing" {
		t.Errorf("error names %s/%s, want %s/team/nothing", e.Host, e.Repository, reg.Host)
	}
}
