package registry

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/gpuforge/gpuforge/internal/testenv"
)

// Paths of the distribution API, for counting requests in the fault proxy.
const (
	pathManifests = `/manifests/`
	pathBlobs     = `/blobs/sha256:`
	pathUploads   = `/blobs/uploads/`
	pathPing      = `^/v2/$`
)

// TestPushOCILayoutMultiPlatform pushes a two-platform index from an OCI layout to a registry
// with TLS and htpasswd auth, pulls it back and checks digests and every blob.
func TestPushOCILayoutMultiPlatform(t *testing.T) {
	reg := testenv.StartRegistry(t)
	idx := testIndex(t, 3, 64<<10, "linux/amd64", "linux/arm64")
	want := digestOf(t, idx)
	dir := writeLayout(t, idx, "v1")

	got, err := Push(ctxFor(t), dir, reg.Ref("ml/trainer:v1"), testOpts(reg)...)
	if err != nil {
		t.Fatalf("Push: %v\n%s", err, reg.Log())
	}
	if got.DigestStr() != want.String() || got.Context().String() != reg.Ref("ml/trainer") {
		t.Errorf("Push = %s, want %s@%s", got, reg.Ref("ml/trainer"), want)
	}

	pulled, err := remote.Index(mustRef(t, reg.Ref("ml/trainer:v1")), pullOpts(t, reg)...)
	if err != nil {
		t.Fatal(err)
	}
	if d := digestOf(t, pulled); d != want {
		t.Errorf("pulled index digest %s, want %s", d, want)
	}
	if err := validate.Index(pulled); err != nil {
		t.Errorf("pulled index does not validate: %v", err)
	}
	wantIM, _ := idx.IndexManifest()
	gotIM, _ := pulled.IndexManifest()
	for i := range wantIM.Manifests {
		if gotIM.Manifests[i].Digest != wantIM.Manifests[i].Digest || gotIM.Manifests[i].Platform.String() != wantIM.Manifests[i].Platform.String() {
			t.Errorf("manifest %d: got %s %v, want %s %v", i, gotIM.Manifests[i].Digest, gotIM.Manifests[i].Platform, wantIM.Manifests[i].Digest, wantIM.Manifests[i].Platform)
		}
	}
}

// TestRepushIsNoOp pushes twice: the second push sends only HEAD requests (and the ping), and
// a push of the same image to a new tag uploads no blob.
func TestRepushIsNoOp(t *testing.T) {
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartFaultProxy(t, reg)
	idx := testIndex(t, 3, 32<<10, "linux/amd64", "linux/arm64")
	dir := writeLayout(t, idx, "")
	ref := proxy.Host + "/ml/trainer:v1"

	if _, err := Push(ctxFor(t), dir, ref, testOpts(reg, proxy.Host)...); err != nil {
		t.Fatal(err)
	}
	// 2 images × (3 layers + config) = 8 blobs.
	if n := proxy.Count(http.MethodPatch, pathUploads); n != 8 {
		t.Errorf("first push: %d PATCH uploads, want 8\n%s", n, proxy.Summary())
	}

	proxy.ResetRequests()
	if _, err := Push(ctxFor(t), dir, ref, testOpts(reg, proxy.Host)...); err != nil {
		t.Fatal(err)
	}
	t.Logf("re-push requests:\n%s", proxy.Summary())
	heads := proxy.Count(http.MethodHead, "")
	total := len(proxy.Requests())
	pings := proxy.Count(http.MethodGet, pathPing)
	if heads != 1 || total-pings != heads {
		t.Errorf("re-push: %d requests, %d HEAD, %d pings; want one HEAD of the tag and nothing else but the ping\n%s", total, heads, pings, proxy.Summary())
	}

	proxy.ResetRequests()
	if _, err := Push(ctxFor(t), dir, proxy.Host+"/ml/trainer:v2", testOpts(reg, proxy.Host)...); err != nil {
		t.Fatal(err)
	}
	if n := proxy.Count(http.MethodPatch, pathUploads) + proxy.Count(http.MethodPost, pathUploads); n != 0 {
		t.Errorf("push to a new tag: %d upload requests, want 0 (every blob exists)\n%s", n, proxy.Summary())
	}
	if n := proxy.Count(http.MethodPut, pathManifests); n != 1 {
		t.Errorf("push to a new tag: %d manifest PUTs, want 1 (the index; its images exist)\n%s", n, proxy.Summary())
	}
}

// TestPushSources pushes each kind of source Push reads and checks the digest it reports is
// the one the registry serves.
func TestPushSources(t *testing.T) {
	reg := testenv.StartRegistry(t)
	img := testImage(t, "linux/amd64", 2, 16<<10)
	imgDigest := digestOf(t, img)
	idx := testIndex(t, 1, 16<<10, "linux/amd64", "linux/arm64")
	idxDigest := digestOf(t, idx)

	// A layout with two named entries.
	twoEntries := t.TempDir()
	p, err := layout.Write(twoEntries, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{AnnotationRefName: "app"})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{AnnotationRefName: "multi"})); err != nil {
		t.Fatal(err)
	}
	layoutIdx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}

	ociTar := filepath.Join(t.TempDir(), "oci.tar")
	tarDir(t, writeLayout(t, idx, "latest"), ociTar, false)
	ociTarGz := filepath.Join(t.TempDir(), "oci.tar.gz")
	tarDir(t, writeLayout(t, idx, "latest"), ociTarGz, true)
	dockerTar := filepath.Join(t.TempDir(), "docker.tar")
	if err := tarball.WriteToFile(dockerTar, mustTag(t, "example.com/app:1"), img); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, src string
		opts      []Option
		want      v1.Hash
	}{
		{"layout one image by ref name", twoEntries, []Option{WithRefName("app")}, imgDigest},
		{"layout one index by ref name", twoEntries, []Option{WithRefName("multi")}, idxDigest},
		{"layout several entries as one index", twoEntries, nil, digestOf(t, layoutIdx)},
		{"OCI tarball", ociTar, nil, idxDigest},
		{"OCI tarball gzip", ociTarGz, nil, idxDigest},
		{"docker tarball", dockerTar, nil, digestOf(t, mustTarballImage(t, dockerTar))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := reg.Ref("src/" + strings.ToLower(strings.ReplaceAll(tc.name, " ", "-")) + ":t")
			got, err := Push(ctxFor(t), tc.src, ref, append(testOpts(reg), tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			if got.DigestStr() != tc.want.String() {
				t.Errorf("Push = %s, want digest %s", got.DigestStr(), tc.want)
			}
			desc, err := remote.Head(mustRef(t, ref), pullOpts(t, reg)...)
			if err != nil {
				t.Fatal(err)
			}
			if desc.Digest != tc.want {
				t.Errorf("registry serves %s, want %s", desc.Digest, tc.want)
			}
		})
	}

	t.Run("unknown ref name", func(t *testing.T) {
		_, err := Push(ctxFor(t), twoEntries, reg.Ref("src/x:t"), append(testOpts(reg), WithRefName("nope"))...)
		if err == nil || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), `"app"`) {
			t.Errorf("err = %v; want one naming the missing ref name and the ones there are", err)
		}
	})
	t.Run("not an image", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "notes.txt")
		if err := os.WriteFile(f, []byte("hello"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Push(ctxFor(t), f, reg.Ref("src/x:t"), testOpts(reg)...)
		var e *Error
		if !errors.As(err, &e) || e.Host != reg.Host || e.Repository != "src/x" {
			t.Errorf("err = %v; want an *Error for %s/src/x", err, reg.Host)
		}
	})
}

// TestUntarRejectsEscapes checks that an OCI tarball cannot write outside its directory.
func TestUntarRejectsEscapes(t *testing.T) {
	for _, h := range []*tar.Header{
		{Name: "blobs/../../evil", Typeflag: tar.TypeReg, Size: 1},
		{Name: "blobs/link", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"},
	} {
		f := filepath.Join(t.TempDir(), "bad.tar")
		out, _ := os.Create(f)
		tw := tar.NewWriter(out)
		_ = tw.WriteHeader(&tar.Header{Name: "oci-layout", Typeflag: tar.TypeReg, Size: 2})
		_, _ = tw.Write([]byte("{}"))
		_ = tw.WriteHeader(h)
		if h.Size > 0 {
			_, _ = tw.Write([]byte("x"))
		}
		tw.Close()
		out.Close()
		dir := t.TempDir()
		if err := untar(f, false, dir); err == nil {
			t.Errorf("untar of an entry %q (%c): no error", h.Name, h.Typeflag)
		}
	}
}

func mustTag(t *testing.T, s string) name.Tag {
	t.Helper()
	tg, err := name.NewTag(s)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func mustTarballImage(t *testing.T, path string) v1.Image {
	t.Helper()
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// tarDir writes the files under dir into a tar (gzip-compressed when gz) at out.
func tarDir(t *testing.T, dir, out string, gz bool) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var w io.Writer = f
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(f)
		w = zw
	}
	tw := tar.NewWriter(w)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPushUploadsInParallel: with every blob PATCH held 100 ms by the proxy, WithJobs(n) has up
// to n uploads in flight, and never more.
func TestPushUploadsInParallel(t *testing.T) {
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartFaultProxy(t, reg)
	proxy.Inject(t, testenv.Fault{Method: http.MethodPatch, Path: pathUploads, Delay: 100 * time.Millisecond})
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(testImage(t, "linux/amd64", 7, 8<<10)); err != nil {
		t.Fatal(err)
	}
	for _, jobs := range []int{1, 4} {
		proxy.ResetRequests()
		ref := proxy.Host + "/ml/parallel" + strconv.Itoa(jobs) + ":v1"
		if _, err := Push(ctxFor(t), dir, ref, append(testOpts(reg, proxy.Host), WithJobs(jobs))...); err != nil {
			t.Fatal(err)
		}
		if n := proxy.Count(http.MethodPatch, pathUploads); n != 8 {
			t.Errorf("jobs %d: %d PATCHes, want 8 (7 layers + config)", jobs, n)
		}
		if n := proxy.MaxConcurrent(http.MethodPatch, pathUploads); n != jobs {
			t.Errorf("jobs %d: at most %d uploads at once, want %d\n%s", jobs, n, jobs, proxy.Summary())
		}
	}
}
