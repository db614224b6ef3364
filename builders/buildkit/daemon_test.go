package buildkit_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/internal/testenv"
)

func TestDefaultStateDir(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)

	t.Setenv(buildkit.StateDirEnv, "")
	t.Setenv("XDG_STATE_HOME", "")
	want := filepath.Join(home, ".local", "state", "gpuforge")
	if got, err := buildkit.DefaultStateDir(); err != nil || got != want {
		t.Errorf("buildkit.DefaultStateDir() with neither variable = %q, %v; want %q", got, err, want)
	}

	t.Setenv("XDG_STATE_HOME", "relative/state") // invalid per the XDG spec: ignored
	if got, err := buildkit.DefaultStateDir(); err != nil || got != want {
		t.Errorf("buildkit.DefaultStateDir() with a relative XDG_STATE_HOME = %q, %v; want %q", got, err, want)
	}

	xdg := filepath.Join(home, "xdg")
	t.Setenv("XDG_STATE_HOME", xdg)
	if got, err := buildkit.DefaultStateDir(); err != nil || got != filepath.Join(xdg, "gpuforge") {
		t.Errorf("buildkit.DefaultStateDir() with XDG_STATE_HOME = %q, %v; want %q", got, err, filepath.Join(xdg, "gpuforge"))
	}

	own := filepath.Join(home, "own")
	t.Setenv(buildkit.StateDirEnv, own)
	if got, err := buildkit.DefaultStateDir(); err != nil || got != own {
		t.Errorf("buildkit.DefaultStateDir() with %s = %q, %v; want %q", buildkit.StateDirEnv, got, err, own)
	}
}

// localForTest returns a fresh state directory and the options that start buildkitd in it;
// a cleanup stops the daemon.
func localForTest(t *testing.T) (string, []buildkit.DaemonOption) {
	t.Helper()
	bin := testenv.Tool(t, "buildkitd")
	dir := t.TempDir()
	t.Cleanup(func() {
		if err := buildkit.StopLocal(context.Background(), dir); err != nil && !errors.Is(err, buildkit.ErrNotRunning) {
			t.Errorf("buildkit.StopLocal in cleanup: %v", err)
		}
	})
	return dir, []buildkit.DaemonOption{buildkit.WithStateDir(dir), buildkit.WithBuildkitdPath(bin)}
}

func TestEnsureLocalStartsReusesAndStops(t *testing.T) {
	ctx := context.Background()
	dir, opts := localForTest(t)
	p := stateLayout(dir)

	first, err := buildkit.EnsureLocal(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Started() || first.PID() == 0 || first.Address() != "unix://"+p.socket {
		t.Fatalf("first buildkit.EnsureLocal: started %v, pid %d, address %s; want a new daemon on unix://%s", first.Started(), first.PID(), first.Address(), p.socket)
	}
	for _, f := range []string{p.socket, p.pid, p.log, p.root} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("after the start: %v", err)
		}
	}
	if data, _ := os.ReadFile(p.pid); strings.TrimSpace(string(data)) != strconv.Itoa(first.PID()) {
		t.Errorf("pid file holds %q, want %d", data, first.PID())
	}

	second, err := buildkit.EnsureLocal(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if second.Started() || second.PID() != first.PID() {
		t.Errorf("second buildkit.EnsureLocal: started %v, pid %d; want the running daemon, pid %d", second.Started(), second.PID(), first.PID())
	}

	// A lost pid file: the daemon is still found, by its command line.
	if err := os.Remove(p.pid); err != nil {
		t.Fatal(err)
	}
	st, err := buildkit.LocalStatus(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Running || !st.Ready || st.PID != first.PID() || st.Address != first.Address() || st.LogPath != p.log {
		t.Errorf("buildkit.LocalStatus = %+v; want running and ready, pid %d at %s", st, first.PID(), first.Address())
	}

	if err := buildkit.StopLocal(ctx, dir); err != nil {
		t.Fatalf("buildkit.StopLocal: %v", err)
	}
	if daemonAlive(first.PID(), p.root) {
		t.Errorf("pid %d still runs after buildkit.StopLocal", first.PID())
	}
	for _, f := range []string{p.socket, p.pid} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after buildkit.StopLocal, %s: %v; want it removed", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(p.root, "cache.db")); err != nil {
		t.Errorf("buildkit.StopLocal must keep the build cache: %v", err)
	}
	st, err = buildkit.LocalStatus(ctx, dir)
	if err != nil || st.Running || st.Ready || st.PID != 0 {
		t.Errorf("buildkit.LocalStatus after buildkit.StopLocal = %+v, %v; want not running", st, err)
	}
	if err := buildkit.StopLocal(ctx, dir); !errors.Is(err, buildkit.ErrNotRunning) {
		t.Errorf("buildkit.StopLocal with nothing running = %v, want buildkit.ErrNotRunning", err)
	}
}

func TestEnsureLocalConcurrentCallsShareOneDaemon(t *testing.T) {
	_, opts := localForTest(t)
	const n = 4
	locals := make([]*buildkit.Local, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { locals[i], errs[i] = buildkit.EnsureLocal(context.Background(), opts...) })
	}
	wg.Wait()
	started := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("buildkit.EnsureLocal #%d: %v", i, errs[i])
		}
		if locals[i].PID() != locals[0].PID() {
			t.Errorf("buildkit.EnsureLocal #%d: pid %d, #0: pid %d; want one daemon", i, locals[i].PID(), locals[0].PID())
		}
		if locals[i].Started() {
			started++
		}
	}
	if started != 1 {
		t.Errorf("%d of %d concurrent buildkit.EnsureLocal calls started a daemon, want 1", started, n)
	}
}

func TestEnsureLocalReplacesStaleFiles(t *testing.T) {
	ctx := context.Background()
	dir, opts := localForTest(t)
	p := stateLayout(dir)
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		t.Fatal(err)
	}

	// A pid file naming a live process that is not buildkitd (the system gave the dead
	// daemon's pid to another program), and a socket nobody listens on.
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	if err := os.WriteFile(p.pid, []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", p.socket)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	first, err := buildkit.EnsureLocal(ctx, opts...)
	if err != nil {
		t.Fatalf("buildkit.EnsureLocal over a stale pid file and socket: %v", err)
	}
	if !first.Started() || first.PID() == other.Process.Pid {
		t.Errorf("buildkit.EnsureLocal: started %v, pid %d; want a new daemon", first.Started(), first.PID())
	}
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the unrelated process named by the stale pid file was signalled: %v", err)
	}

	// The daemon dies without cleaning up: its socket and pid file stay behind.
	if err := syscall.Kill(first.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitGone(first.PID(), p.root, 10*time.Second) {
		t.Fatalf("pid %d survived SIGKILL", first.PID())
	}
	if _, err := os.Stat(p.socket); err != nil {
		t.Logf("note: buildkitd removed its socket despite SIGKILL: %v", err)
	}
	second, err := buildkit.EnsureLocal(ctx, opts...)
	if err != nil {
		t.Fatalf("buildkit.EnsureLocal after the daemon died: %v", err)
	}
	if !second.Started() || second.PID() == first.PID() {
		t.Errorf("buildkit.EnsureLocal after the daemon died: started %v, pid %d (dead one %d); want a new daemon", second.Started(), second.PID(), first.PID())
	}
}

func TestEnsureLocalReplacesHungDaemon(t *testing.T) {
	ctx := context.Background()
	dir, opts := localForTest(t)
	p := stateLayout(dir)
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A process of this root that never answers, as a wedged buildkitd would be.
	hung := exec.Command(fakeBuildkitd(t, "while :; do sleep 0.1; done\n"), "--root", p.root, "--addr", "unix://"+p.socket)
	if err := hung.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hung.Process.Kill(); hung.Wait() })
	if err := os.WriteFile(p.pid, []byte(strconv.Itoa(hung.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !daemonAlive(hung.Process.Pid, p.root) {
		t.Fatal("the stand-in does not run with --root")
	}

	start := time.Now()
	l, err := buildkit.EnsureLocal(ctx, append(opts, buildkit.WithStartTimeout(500*time.Millisecond))...)
	if err != nil {
		t.Fatalf("buildkit.EnsureLocal with a hung daemon: %v", err)
	}
	if !l.Started() || l.PID() == hung.Process.Pid {
		t.Errorf("buildkit.EnsureLocal: started %v, pid %d (hung one %d); want a new daemon", l.Started(), l.PID(), hung.Process.Pid)
	}
	if daemonAlive(hung.Process.Pid, p.root) {
		t.Error("the hung daemon still runs")
	}
	t.Logf("replaced a hung daemon in %v", time.Since(start))
}

// fakeBuildkitd writes a shell script standing in for buildkitd and returns its path.
func fakeBuildkitd(t *testing.T, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "buildkitd")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestEnsureLocalStartFailures(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	for _, tc := range []struct {
		name, script string
		want         []string // substrings of the error
		notWant      []string
	}{
		{
			name:   "exits",
			script: "echo 'buildkitd: overlayfs is broken' >&2\nexit 3\n",
			want:   []string{"exited before it answered", "exit status 3", "buildkitd: overlayfs is broken", "buildkitd.log"},
		},
		{
			name:    "never answers",
			script:  "i=0\nwhile [ $i -lt 30 ]; do i=$((i+1)); echo \"log line $i\"; done\nwhile :; do sleep 0.1; done\n",
			want:    []string{"did not answer", "within 1s", "log line 11\n", "log line 30"},
			notWant: []string{"log line 10\n"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := stateLayout(dir)
			start := time.Now()
			_, err := buildkit.EnsureLocal(context.Background(), buildkit.WithStateDir(dir),
				buildkit.WithBuildkitdPath(fakeBuildkitd(t, tc.script)), buildkit.WithStartTimeout(time.Second))
			if err == nil {
				buildkit.StopLocal(context.Background(), dir)
				t.Fatal("buildkit.EnsureLocal with a broken buildkitd succeeded")
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error does not contain %q:\n%v", s, err)
				}
			}
			for _, s := range tc.notWant {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error contains %q:\n%v", s, err)
				}
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("buildkit.EnsureLocal took %v to fail", d)
			}
			if _, err := os.Stat(p.pid); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pid file after a failed start: %v; want it removed", err)
			}
			if st, _ := buildkit.LocalStatus(context.Background(), dir); st.Running {
				t.Errorf("buildkit.LocalStatus after a failed start = %+v; want nothing running", st)
			}
		})
	}
}

func TestEnsureLocalSocketPathTooLong(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	_, err := buildkit.EnsureLocal(context.Background(), buildkit.WithStateDir(dir), buildkit.WithBuildkitdPath("/nonexistent/buildkitd"))
	if err == nil || !strings.Contains(err.Error(), "more than a unix socket allows") || !strings.Contains(err.Error(), buildkit.StateDirEnv) {
		t.Errorf("buildkit.EnsureLocal with a long state directory = %v; want an error about the socket path naming %s", err, buildkit.StateDirEnv)
	}
}

func TestEnsureLocalFindsBuildkitd(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fake := fakeBuildkitd(t, "echo 'the buildkitd on PATH'\nexit 1\n")
	t.Setenv("PATH", filepath.Dir(fake))
	_, err := buildkit.EnsureLocal(ctx, buildkit.WithStateDir(dir))
	if err == nil || !strings.Contains(err.Error(), "the buildkitd on PATH") {
		t.Errorf("EnsureLocal with buildkitd only on PATH = %v; want it to start that one", err)
	}

	t.Setenv("PATH", t.TempDir())
	_, err = buildkit.EnsureLocal(ctx, buildkit.WithStateDir(dir))
	if err == nil || !strings.Contains(err.Error(), "buildkitd is not") || !strings.Contains(err.Error(), "--builder") {
		t.Errorf("EnsureLocal with no buildkitd = %v; want an error saying so and suggesting --builder", err)
	}

	missing := filepath.Join(t.TempDir(), "buildkitd")
	_, err = buildkit.EnsureLocal(ctx, buildkit.WithStateDir(dir), buildkit.WithBuildkitdPath(missing))
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("EnsureLocal with a missing WithBuildkitdPath = %v; want an error naming %s", err, missing)
	}
}

// statePaths is the layout under a state directory that EnsureLocal documents.
type statePaths struct{ dir, root, socket, pid, log string }

func stateLayout(stateDir string) statePaths {
	dir := filepath.Join(stateDir, "buildkit")
	return statePaths{
		dir:    dir,
		root:   filepath.Join(dir, "root"),
		socket: filepath.Join(dir, "buildkitd.sock"),
		pid:    filepath.Join(dir, "buildkitd.pid"),
		log:    filepath.Join(dir, "buildkitd.log"),
	}
}

// daemonAlive reports whether pid runs with --root root. A zombie, which the reaper of the
// process that started it may not have collected yet, has an empty command line: gone.
func daemonAlive(pid int, root string) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return strings.Contains(string(data), "--root\x00"+root+"\x00")
}

// waitGone waits up to d for pid to stop running with --root root.
func waitGone(pid int, root string, d time.Duration) bool {
	for deadline := time.Now().Add(d); daemonAlive(pid, root); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}
