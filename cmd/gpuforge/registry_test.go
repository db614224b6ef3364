package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	"github.com/spf13/cobra"

	"github.com/gpuforge/gpuforge/builders/registry"
	"github.com/gpuforge/gpuforge/internal/testenv"
)

// runRegistryCLI runs gpuforge with push, copy and inspect registered (main.go's root may not
// have them yet) and returns the exit code, stdout and stderr, as run() would.
func runRegistryCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRootCmd(&stdout, &stderr)
	have := map[string]bool{}
	for _, c := range root.Commands() {
		have[c.Name()] = true
	}
	for _, c := range []*cobra.Command{newPushCmd(), newCopyCmd(), newInspectCmd()} {
		if !have[c.Name()] {
			root.AddCommand(c)
		}
	}
	// --verbose points go-containerregistry's global loggers at this run's stderr.
	savedProgress, savedWarn := logs.Progress, logs.Warn
	defer func() { logs.Progress, logs.Warn = savedProgress, savedWarn }()
	root.SetArgs(singleDashFlags(args))
	err := root.Execute()
	code := ExitOK
	var ee *exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.code
		if ee.msg != "" {
			stderr.WriteString("gpuforge: " + ee.msg + "\n")
		}
	default:
		code = ExitUsage
		stderr.WriteString("gpuforge: " + err.Error() + "\n")
	}
	return code, stdout.String(), stderr.String()
}

// registryDockerConfig points docker's config (DOCKER_CONFIG, HOME) at a temporary one with
// credentials for hosts, so that the CLI finds them without a recipe.
func registryDockerConfig(t *testing.T, user, password string, hosts ...string) {
	t.Helper()
	dir := t.TempDir()
	auths := map[string]map[string]string{}
	for _, h := range hosts {
		auths[h] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}
	}
	b, _ := json.Marshal(map[string]any{"auths": auths})
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	t.Setenv("HOME", t.TempDir())
}

// registryTestLayout writes a two-platform random index to an OCI layout and returns the
// directory and the index's digest.
func registryTestLayout(t *testing.T) (string, v1.Hash) {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, pl := range []string{"linux/amd64", "linux/arm64"} {
		img, err := random.Image(16<<10, 2)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := v1.ParsePlatform(pl)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	dir := t.TempDir()
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendIndex(idx); err != nil {
		t.Fatal(err)
	}
	h, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return dir, h
}

func TestRegistryCommands(t *testing.T) {
	reg := testenv.StartRegistry(t)
	registryDockerConfig(t, reg.Username, reg.Password, reg.Host)
	dir, want := registryTestLayout(t)
	src := reg.Ref("ml/trainer:v1")

	code, out, errOut := runRegistryCLI(t, "push", "--ca-file", reg.CAFile, "--jobs", "2", dir, src)
	if code != ExitOK {
		t.Fatalf("push: exit %d\n%s", code, errOut)
	}
	if got := strings.TrimSpace(out); got != reg.Ref("ml/trainer@"+want.String()) {
		t.Errorf("push printed %q, want %s@%s", got, reg.Ref("ml/trainer"), want)
	}

	code, out, errOut = runRegistryCLI(t, "copy", "--ca-file", reg.CAFile, src, reg.Ref("mirror/trainer:v1"))
	if code != ExitOK {
		t.Fatalf("copy: exit %d\n%s", code, errOut)
	}
	if got := strings.TrimSpace(out); got != reg.Ref("mirror/trainer@"+want.String()) {
		t.Errorf("copy printed %q, want the same digest in mirror/trainer", got)
	}
	mirror, err := name.ParseReference(reg.Ref("mirror/trainer:v1"))
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(mirror,
		remote.WithTransport(reg.Client.Transport), remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}))
	if err != nil || desc.Digest != want {
		t.Errorf("mirror/trainer:v1 is %v (%v), want %s", desc, err, want)
	}

	code, out, errOut = runRegistryCLI(t, "inspect", "--ca-file", reg.CAFile, src)
	if code != ExitOK {
		t.Fatalf("inspect: exit %d\n%s", code, errOut)
	}
	t.Logf("gpuforge inspect:\n%s", out)
	for _, s := range []string{"Digest:", want.String(), "application/vnd.oci.image.index.v1+json", "linux/amd64", "linux/arm64", "PLATFORM"} {
		if !strings.Contains(out, s) {
			t.Errorf("inspect output lacks %q:\n%s", s, out)
		}
	}
	code, out, errOut = runRegistryCLI(t, "inspect", "--format", "json", "--ca-file", reg.CAFile, src)
	if code != ExitOK {
		t.Fatalf("inspect --format json: exit %d\n%s", code, errOut)
	}
	var d registry.Description
	if err := json.Unmarshal([]byte(out), &d); err != nil || d.Digest != want.String() || len(d.Platforms) != 2 {
		t.Errorf("inspect --format json: %v\n%s", err, out)
	}

	// Without the CA the TLS handshake fails: exit 4, the registry named.
	code, _, errOut = runRegistryCLI(t, "inspect", src)
	if code != ExitFailed || !strings.Contains(errOut, reg.Host+"/ml/trainer") {
		t.Errorf("inspect without --ca-file: exit %d, stderr %q; want 4 naming the repository", code, errOut)
	}
}

// TestRegistryCommandsRecipe takes credentials and the CA from a recipe's registry block, the
// password from password_env; a wrong password exits 4 naming the host, without the password.
func TestRegistryCommandsRecipe(t *testing.T) {
	reg := testenv.StartRegistry(t)
	registryDockerConfig(t, "nobody", "nothing")
	dir, want := registryTestLayout(t)
	recipeDir := t.TempDir()
	// ca_file is relative to the recipe's directory.
	ca, err := os.ReadFile(reg.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(recipeDir, "ca.pem"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	recipe := filepath.Join(recipeDir, "registries.hcl")
	src := `registry "test" {
  host         = "` + reg.Host + `"
  auth         = "basic"
  username     = "` + reg.Username + `"
  password_env = "GPUFORGE_TEST_REGISTRY_PASSWORD"
  ca_file      = "ca.pem"
}
`
	if err := os.WriteFile(recipe, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Setenv("GPUFORGE_TEST_REGISTRY_PASSWORD", reg.Password)
	code, out, errOut := runRegistryCLI(t, "push", "--recipe", recipe, dir, reg.Ref("team/app:v1"))
	if code != ExitOK || !strings.Contains(out, want.String()) {
		t.Fatalf("push --recipe: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}

	const canary = "canary-wrong-Pa55-9d1e"
	t.Setenv("GPUFORGE_TEST_REGISTRY_PASSWORD", canary)
	code, out, errOut = runRegistryCLI(t, "push", "--recipe", recipe, "-v", dir, reg.Ref("team/app:v2"))
	if code != ExitFailed {
		t.Fatalf("push with a wrong password: exit %d, want %d\n%s", code, ExitFailed, errOut)
	}
	t.Logf("gpuforge push -v with a wrong password:\n%s", errOut)
	if !strings.Contains(errOut, reg.Host) || !strings.Contains(errOut, "authentication denied") {
		t.Errorf("stderr %q: want the host and the kind of failure", errOut)
	}
	for _, leak := range []string{canary, base64.StdEncoding.EncodeToString([]byte(reg.Username + ":" + canary))} {
		if strings.Contains(out+errOut, leak) {
			t.Errorf("output contains the password (%q):\n%s%s", leak, out, errOut)
		}
	}

	// Unset password_env: an auth error that names the variable.
	os.Unsetenv("GPUFORGE_TEST_REGISTRY_PASSWORD")
	code, _, errOut = runRegistryCLI(t, "inspect", "--recipe", recipe, reg.Ref("team/app:v1"))
	if code != ExitFailed || !strings.Contains(errOut, "GPUFORGE_TEST_REGISTRY_PASSWORD is not set") {
		t.Errorf("inspect with password_env unset: exit %d, stderr %q", code, errOut)
	}
}

func TestRegistryCommandsUsage(t *testing.T) {
	for _, args := range [][]string{
		{"push", "only-one-arg"},
		{"push", "--jobs", "0", "dir", "127.0.0.1:1/a:b"},
		{"copy", "a"},
		{"inspect", "--format", "yaml", "127.0.0.1:1/a:b"},
	} {
		if code, _, errOut := runRegistryCLI(t, args...); code != ExitUsage {
			t.Errorf("gpuforge %s: exit %d, want %d\n%s", strings.Join(args, " "), code, ExitUsage, errOut)
		}
	}
	// A bad reference or source is a failed step, not a usage error: exit 4.
	if code, _, errOut := runRegistryCLI(t, "push", t.TempDir(), "127.0.0.1:1/UPPER:x"); code != ExitFailed || !strings.Contains(errOut, "invalid reference") {
		t.Errorf("push to an invalid reference: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := runRegistryCLI(t, "push", filepath.Join(t.TempDir(), "missing"), "127.0.0.1:1/a:x"); code != ExitFailed || !strings.Contains(errOut, "127.0.0.1:1/a") {
		t.Errorf("push of a missing source: exit %d, stderr %q", code, errOut)
	}
}
