package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	"github.com/spf13/cobra"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/internal/testenv"
)

// runBuilderCLI runs gpuforge args as run does, on a root command that has the builder command
// and a persistent --builder flag even before main.go registers them.
func runBuilderCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd(&out, &errOut)
	if root.PersistentFlags().Lookup(builderFlag) == nil {
		root.PersistentFlags().String(builderFlag, "", "the builder's address")
	}
	if !hasSubcommand(root, "builder") {
		root.AddCommand(newBuilderCmd())
	}
	root.SetArgs(args)
	err := root.Execute()
	var ee *exitError
	switch {
	case err == nil:
		code = ExitOK
	case errors.As(err, &ee):
		code = ee.code
		errOut.WriteString("gpuforge: " + ee.msg + "\n")
	default:
		code = ExitUsage
		errOut.WriteString("gpuforge: " + err.Error() + "\n")
	}
	return code, out.String(), errOut.String()
}

func hasSubcommand(root *cobra.Command, name string) bool {
	for _, c := range root.Commands() {
		if c.Name() == name {
			return true
		}
	}
	return false
}

// localBuilderEnv points gpuforge's local daemon at a fresh state directory and puts
// buildkitd on PATH; a cleanup stops the daemon.
func localBuilderEnv(t *testing.T) string {
	t.Helper()
	bin := testenv.Tool(t, "buildkitd")
	state := t.TempDir()
	t.Setenv(buildkit.StateDirEnv, state)
	t.Setenv("PATH", filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv(buildkit.BuildkitHostEnv, "")
	os.Unsetenv(buildkit.BuildkitHostEnv)
	t.Cleanup(func() {
		if err := buildkit.StopLocal(context.Background(), state); err != nil && !errors.Is(err, buildkit.ErrNotRunning) {
			t.Errorf("stopping the local daemon: %v", err)
		}
	})
	return state
}

func wantCode(t *testing.T, args []string, code, want int, stdout, stderr string) {
	t.Helper()
	if code != want {
		t.Fatalf("gpuforge %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, stdout, stderr)
	}
}

func TestBuilderCommandsLocal(t *testing.T) {
	state := localBuilderEnv(t)
	run := func(want int, args ...string) (string, string) {
		t.Helper()
		code, stdout, stderr := runBuilderCLI(t, args...)
		wantCode(t, args, code, want, stdout, stderr)
		return stdout, stderr
	}
	contains := func(what, out string, subs ...string) {
		t.Helper()
		for _, s := range subs {
			if !strings.Contains(out, s) {
				t.Errorf("%s does not contain %q:\n%s", what, s, out)
			}
		}
	}

	out, _ := run(ExitOK, "builder", "status")
	contains("status before any build", out, "gpuforge's local buildkitd", "not running", state)

	// du starts the daemon; a fresh one has no cache.
	out, _ = run(ExitOK, "builder", "du")
	contains("du of a fresh daemon", out, "ID", "RECLAIMABLE", "SIZE", "LAST USED", "Total:       0 B")

	// A small build leaves cache records behind.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := buildkit.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	def, err := llb.Scratch().File(llb.Mkfile("/hello", 0o644, bytes.Repeat([]byte("gpuforge\n"), 1<<14))).Marshal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Solve(ctx, def, client.SolveOpt{}, nil); err != nil {
		t.Fatalf("solving a small build: %v", err)
	}
	c.Close()

	out, _ = run(ExitOK, "builder", "du")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 4 || !regexp.MustCompile(`^\w{20,}\s+(yes|no)\s+\d`).MatchString(lines[1]) {
		t.Errorf("du after a build shows no cache record:\n%s", out)
	}
	if strings.Contains(out, "Total:       0 B") {
		t.Errorf("du after a build totals 0 B:\n%s", out)
	}

	out, _ = run(ExitOK, "builder", "status")
	st, err := buildkit.LocalStatus(ctx, state)
	if err != nil || !st.Ready {
		t.Fatalf("LocalStatus = %+v, %v", st, err)
	}
	contains("status of a running daemon", out, "status:    running", st.Address, st.LogPath,
		testenv.PinnedVersion(t, "tools/go.mod", "github.com/moby/buildkit"), "linux/", "(oci, ")
	if !regexp.MustCompile(`(?m)^pid:\s+[1-9]\d*$`).MatchString(out) {
		t.Errorf("status does not show the pid:\n%s", out)
	}

	_, stderr := run(ExitUsage, "builder", "prune", "--keep-storage", "lots")
	contains("prune with a bad size", stderr, "--keep-storage", `"lots"`)
	out, _ = run(ExitOK, "builder", "prune", "--keep-storage", "1GiB")
	contains("prune keeping 1GiB", out, "Freed 0 B")
	out, _ = run(ExitOK, "builder", "prune", "--all")
	contains("prune --all", out, "Freed ")
	if strings.Contains(out, "Freed 0 B") {
		t.Errorf("prune --all after a build freed nothing:\n%s", out)
	}
	out, _ = run(ExitOK, "builder", "du")
	contains("du after prune --all", out, "Total:       0 B")

	_, stderr = run(ExitUsage, "builder", "du", "--tlscacert", "ca.pem")
	contains("TLS flags without a tcp builder", stderr, "--tlscacert", "tcp://")

	out, _ = run(ExitOK, "builder", "stop")
	contains("stop", out, "Stopped gpuforge's local buildkitd (pid ", state)
	out, _ = run(ExitOK, "builder", "status")
	contains("status after stop", out, "not running")
	out, _ = run(ExitOK, "builder", "stop")
	contains("stop when stopped", out, "is not running")
}

func TestBuilderCommandsRemote(t *testing.T) {
	localBuilderEnv(t) // must stay unused
	addr, files := testenv.StartBuildkitdTLS(t)
	tlsArgs := []string{"--tlscacert", files.CACert, "--tlscert", files.ClientCert, "--tlskey", files.ClientKey}

	for _, how := range []string{"--builder", "BUILDKIT_HOST"} {
		t.Run(how, func(t *testing.T) {
			args := append([]string{"builder", "status"}, tlsArgs...)
			if how == "--builder" {
				args = append(args, "--builder", addr)
			} else {
				t.Setenv(buildkit.BuildkitHostEnv, addr)
			}
			code, out, stderr := runBuilderCLI(t, args...)
			wantCode(t, args, code, ExitOK, out, stderr)
			for _, s := range []string{addr + " (from " + how + ")", "buildkit:  v", "worker:"} {
				if !strings.Contains(out, s) {
					t.Errorf("status does not contain %q:\n%s", s, out)
				}
			}
		})
	}

	args := []string{"builder", "du", "--builder", addr, "--tlscacert", files.CACert}
	code, out, stderr := runBuilderCLI(t, args...)
	wantCode(t, args, code, ExitFailed, out, stderr)
	if !strings.Contains(stderr, addr) || !strings.Contains(stderr, "--tlscert and --tlskey") {
		t.Errorf("du without a client certificate: stderr does not name %s and suggest --tlscert and --tlskey:\n%s", addr, stderr)
	}

	args = []string{"builder", "status", "--builder", "localhost:1234"}
	code, out, stderr = runBuilderCLI(t, args...)
	wantCode(t, args, code, ExitUsage, out, stderr)
	if !strings.Contains(stderr, "tcp://localhost:1234") {
		t.Errorf("status with an address without a scheme: stderr does not suggest tcp://localhost:1234:\n%s", stderr)
	}

	if st, err := buildkit.LocalStatus(context.Background(), ""); err != nil || st.Running {
		t.Errorf("commands against a remote builder started the local one: %+v, %v", st, err)
	}
}

func TestByteString(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := byteString(n); got != want {
			t.Errorf("byteString(%d) = %q, want %q", n, got, want)
		}
	}
}
