package registry

import (
	"bytes"
	"context"
	"encoding/base64"
	"log"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/logs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/gpuforge/gpuforge/internal/testenv"
	"github.com/gpuforge/gpuforge/recipes"
)

// fastRetry keeps retry tests quick: 5 attempts, 10 ms apart at first.
var fastRetry = WithRetry(5, 10*time.Millisecond)

// testOpts returns options that reach reg, directly and through the given proxy hosts, with
// its credentials from registry blocks (auth = "basic", ca_file = the test CA).
func testOpts(reg *testenv.Registry, hosts ...string) []Option {
	var blocks []*recipes.Registry
	for i, h := range append([]string{reg.Host}, hosts...) {
		b := &recipes.Registry{Name: "test" + string(rune('a'+i)), Host: h, CAFile: reg.CAFile}
		if reg.Username != "" {
			b.Auth, b.Username, b.Password = AuthBasic, reg.Username, reg.Password
		}
		blocks = append(blocks, b)
	}
	return []Option{
		WithRegistries(blocks),
		WithKeychain(NewKeychain(blocks, WithDockerKeychain(anonymousKeychain{}))),
		fastRetry,
	}
}

// anonymousKeychain keeps the developer's docker config out of the tests.
type anonymousKeychain struct{}

func (anonymousKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return authn.Anonymous, nil
}

// pullOpts are options for reading back from reg with go-containerregistry directly.
func pullOpts(t *testing.T, reg *testenv.Registry) []remote.Option {
	t.Helper()
	o := []remote.Option{remote.WithTransport(reg.Client.Transport)}
	if reg.Username != "" {
		o = append(o, remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}))
	}
	return o
}

// testImage is an OCI image for platform with n random layers of size bytes each.
func testImage(t *testing.T, platform string, n int, size int64) v1.Image {
	t.Helper()
	var layers []v1.Layer
	for range n {
		l, err := random.Layer(size, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		t.Fatal(err)
	}
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config.Labels = map[string]string{"org.opencontainers.image.title": "trainer", "dev.gpuforge.target": "image.trainer"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testIndex is an OCI index of one random image per platform.
func testIndex(t *testing.T, n int, size int64, platforms ...string) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, pl := range platforms {
		p, err := v1.ParsePlatform(pl)
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        testImage(t, pl, n, size),
			Descriptor: v1.Descriptor{Platform: p},
		})
	}
	return idx
}

// writeLayout writes an OCI layout holding idx as index.json's one entry, named refName.
func writeLayout(t *testing.T, idx v1.ImageIndex, refName string) string {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	var opts []layout.Option
	if refName != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{AnnotationRefName: refName}))
	}
	if err := p.AppendIndex(idx, opts...); err != nil {
		t.Fatal(err)
	}
	return dir
}

func digestOf(t *testing.T, d interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// captureGGCRLogs sends go-containerregistry's warning, progress and debug logs (the debug one
// dumps every request and response) to a buffer for the rest of the test.
func captureGGCRLogs(t *testing.T) *syncBuffer {
	buf := &syncBuffer{}
	saved := []*log.Logger{logs.Warn, logs.Progress, logs.Debug}
	logs.Warn = log.New(buf, "warn ", 0)
	logs.Progress = log.New(buf, "progress ", 0)
	logs.Debug = log.New(buf, "debug ", 0)
	t.Cleanup(func() { logs.Warn, logs.Progress, logs.Debug = saved[0], saved[1], saved[2] })
	return buf
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// assertNoSecret fails when text holds password in any form a client could leak it in: plain,
// URL-escaped, or base64 in a basic-auth header.
func assertNoSecret(t *testing.T, what, text, user, password string) {
	t.Helper()
	for _, form := range []string{
		password,
		base64.StdEncoding.EncodeToString([]byte(user + ":" + password)),
		base64.StdEncoding.EncodeToString([]byte(password)),
	} {
		if strings.Contains(text, form) {
			t.Errorf("%s contains the password (as %q):\n%s", what, form, text)
		}
	}
}
