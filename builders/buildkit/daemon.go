package buildkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/buildkit/client"
)

// StateDirEnv names the environment variable that, when set, is gpuforge's state directory
// (see DefaultStateDir).
const StateDirEnv = "GPUFORGE_STATE_DIR"

// ErrNotRunning is returned by StopLocal when no local daemon was running.
var ErrNotRunning = errors.New("gpuforge's local buildkitd is not running")

const (
	// defaultDaemonStartTimeout bounds how long EnsureLocal waits for a new daemon to answer.
	defaultDaemonStartTimeout = 30 * time.Second
	// daemonStopGrace is how long StopLocal waits after SIGTERM before it sends SIGKILL.
	daemonStopGrace = 10 * time.Second
	// daemonKillGrace is how long StopLocal waits after SIGKILL before it gives up.
	daemonKillGrace = 5 * time.Second
	// daemonPingTimeout bounds one ListWorkers call that asks whether a daemon answers.
	daemonPingTimeout = 5 * time.Second
	// daemonPollInterval is how often waits re-check a lock, a socket or a process.
	daemonPollInterval = 100 * time.Millisecond
	// daemonLogTailLines is how many lines of the daemon's log a start error quotes.
	daemonLogTailLines = 20
	// maxUnixSocketPath is the longest path a unix socket address may have on Linux
	// (sun_path is 108 bytes, NUL included).
	maxUnixSocketPath = 107
)

// DefaultStateDir returns the directory under which gpuforge keeps the state of its local
// buildkitd: $GPUFORGE_STATE_DIR when set, else $XDG_STATE_HOME/gpuforge when XDG_STATE_HOME is
// an absolute path, else ~/.local/state/gpuforge. Root gets the same answer as any other user
// (~/.local/state/gpuforge unless the environment says otherwise): the daemon's cache lives
// with the user who builds, not in a system directory. A relative GPUFORGE_STATE_DIR is made
// absolute against the working directory.
func DefaultStateDir() (string, error) {
	if dir := os.Getenv(StateDirEnv); dir != "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return "", fmt.Errorf("state directory %s=%q: %w", StateDirEnv, dir, err)
		}
		return abs, nil
	}
	// The XDG Base Directory spec says relative paths are invalid and must be ignored.
	if dir := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "gpuforge"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the state directory (set %s to choose one): %w", StateDirEnv, err)
	}
	return filepath.Join(home, ".local", "state", "gpuforge"), nil
}

// localPaths is where the files of the local daemon of one state directory live:
//
//	<state>/buildkit/root           buildkitd --root: the build cache and snapshots
//	<state>/buildkit/buildkitd.sock the daemon's socket
//	<state>/buildkit/buildkitd.pid  the daemon's process id, written by gpuforge
//	<state>/buildkit/buildkitd.log  the daemon's stdout and stderr (the previous one is .log.1)
//	<state>/buildkit/buildkitd.lock flock'd while a gpuforge checks, starts or stops the daemon
//	<state>/buildkit/buildkitd.toml the daemon's configuration (CDI spec directories)
//	<state>/cdi                     CDI specs gpuforge generates for GPU checks
type localPaths struct {
	dir, root, socket, pid, log, lock, config, cdi string
}

func newLocalPaths(stateDir string) localPaths {
	dir := filepath.Join(stateDir, "buildkit")
	return localPaths{
		dir:    dir,
		root:   filepath.Join(dir, "root"),
		socket: filepath.Join(dir, "buildkitd.sock"),
		pid:    filepath.Join(dir, "buildkitd.pid"),
		log:    filepath.Join(dir, "buildkitd.log"),
		lock:   filepath.Join(dir, "buildkitd.lock"),
		config: filepath.Join(dir, "buildkitd.toml"),
		cdi:    filepath.Join(stateDir, "cdi"),
	}
}

// CDISpecDir is where gpuforge writes the CDI specs the local daemon of a state directory reads
// (besides the system's /etc/cdi and /var/run/cdi).
func CDISpecDir(stateDir string) (string, error) {
	dir, err := resolveStateDir(stateDir)
	if err != nil {
		return "", err
	}
	return newLocalPaths(dir).cdi, nil
}

// writeDaemonConfig writes buildkitd's configuration: the CDI spec directories, which must
// exist before the daemon starts for it to watch them.
func writeDaemonConfig(p localPaths) error {
	if err := os.MkdirAll(p.cdi, 0o755); err != nil {
		return err
	}
	cfg := fmt.Sprintf("[cdi]\n  specDirs = [\"/etc/cdi\", \"/var/run/cdi\", %q]\n", p.cdi)
	return os.WriteFile(p.config, []byte(cfg), 0o644)
}

func (p localPaths) address() string { return "unix://" + p.socket }

// resolveStateDir returns dir made absolute, or DefaultStateDir when dir is empty.
func resolveStateDir(dir string) (string, error) {
	if dir == "" {
		return DefaultStateDir()
	}
	return filepath.Abs(dir)
}

// A DaemonOption configures EnsureLocal.
type DaemonOption func(*daemonOptions)

type daemonOptions struct {
	stateDir      string
	buildkitdPath string
	startTimeout  time.Duration
}

// WithStateDir sets the state directory whose buildkit/ subdirectory holds the daemon's root,
// socket, pid file, log and lock. The default is DefaultStateDir().
func WithStateDir(dir string) DaemonOption {
	return func(o *daemonOptions) { o.stateDir = dir }
}

// WithBuildkitdPath sets the buildkitd program to start, a path or a name looked up in $PATH.
// The default is the buildkitd next to the running gpuforge executable, else buildkitd on $PATH.
func WithBuildkitdPath(path string) DaemonOption {
	return func(o *daemonOptions) { o.buildkitdPath = path }
}

// WithStartTimeout sets how long EnsureLocal waits for a daemon it started to answer before it
// stops it and reports the end of its log. The default is 30 seconds.
func WithStartTimeout(d time.Duration) DaemonOption {
	return func(o *daemonOptions) { o.startTimeout = d }
}

func makeDaemonOptions(opts []DaemonOption) (daemonOptions, error) {
	o := daemonOptions{startTimeout: defaultDaemonStartTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	dir, err := resolveStateDir(o.stateDir)
	if err != nil {
		return o, err
	}
	o.stateDir = dir
	if o.startTimeout <= 0 {
		o.startTimeout = defaultDaemonStartTimeout
	}
	return o, nil
}

// Local is gpuforge's own buildkitd, found running or started by EnsureLocal.
type Local struct {
	paths   localPaths
	pid     int
	started bool
}

// Address returns the daemon's address, unix:// and the socket's absolute path.
func (l *Local) Address() string { return l.paths.address() }

// PID returns the daemon's process id, or 0 when a daemon answers on the socket but its pid
// file does not name it.
func (l *Local) PID() int { return l.pid }

// Started reports whether this EnsureLocal call started the daemon, rather than finding it
// running.
func (l *Local) Started() bool { return l.started }

// LogPath returns the path of the daemon's log file.
func (l *Local) LogPath() string { return l.paths.log }

// EnsureLocal returns gpuforge's local buildkitd, starting it when it is not running.
//
// The daemon lives under the state directory (see WithStateDir and localPaths) and outlives
// gpuforge, so later runs reuse it and its cache; `gpuforge builder stop` (StopLocal) ends it.
// EnsureLocal holds an flock on buildkit/buildkitd.lock while it checks and starts, so that
// concurrent gpuforge runs share one daemon: the second waits for the first and then finds the
// daemon running. A daemon that answers on the socket is reused. A pid file that names no
// running buildkitd of this root, and a socket nobody answers on, are left-overs of a daemon
// that died; EnsureLocal removes them and starts anew. A buildkitd of this root that runs but
// does not answer gets the start timeout to come up, and is then stopped and replaced.
//
// The daemon runs `buildkitd --root <state>/buildkit/root --addr unix://<socket>
// --oci-worker=true --containerd-worker=false` in a session of its own with stdout and stderr
// going to the log file. Its snapshotter is buildkitd's "auto": overlayfs where the root's file
// system supports it, else fuse-overlayfs or native. When it does not answer within the start
// timeout, or exits, EnsureLocal stops it and returns an error quoting the end of its log.
func EnsureLocal(ctx context.Context, opts ...DaemonOption) (*Local, error) {
	o, err := makeDaemonOptions(opts)
	if err != nil {
		return nil, err
	}
	p := newLocalPaths(o.stateDir)
	if len(p.socket) > maxUnixSocketPath {
		return nil, fmt.Errorf("local buildkitd: the socket path %s is %d bytes long, more than a unix socket allows (%d); set %s to a shorter directory", p.socket, len(p.socket), maxUnixSocketPath, StateDirEnv)
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, fmt.Errorf("local buildkitd: %w", err)
	}
	// The holder of the lock may wait for a half-started daemon, stop it and start another.
	unlock, err := lockStateDir(ctx, p.lock, 2*o.startTimeout+daemonStopGrace+daemonKillGrace+5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("local buildkitd: %w", err)
	}
	defer unlock()

	if pingDaemon(ctx, p.address()) == nil {
		return &Local{paths: p, pid: runningPID(p)}, nil
	}
	if pid := runningPID(p); pid != 0 {
		// Alive but not answering: perhaps still starting after a gpuforge that started it
		// was interrupted. Give it the start timeout, then replace it.
		if err := waitReady(ctx, p.address(), o.startTimeout, nil, nil); err == nil {
			return &Local{paths: p, pid: pid}, nil
		} else if ctx.Err() != nil {
			return nil, fmt.Errorf("local buildkitd: %w", ctx.Err())
		}
		if err := stopPID(ctx, pid, p.root); err != nil {
			return nil, fmt.Errorf("local buildkitd: stopping pid %d, which did not answer on %s: %w", pid, p.address(), err)
		}
	}
	if err := removeStale(p); err != nil {
		return nil, fmt.Errorf("local buildkitd: %w", err)
	}
	bin, err := findBuildkitd(o.buildkitdPath)
	if err != nil {
		return nil, fmt.Errorf("local buildkitd: %w", err)
	}
	pid, err := startDaemon(ctx, p, bin, o.startTimeout)
	if err != nil {
		return nil, err
	}
	return &Local{paths: p, pid: pid, started: true}, nil
}

// startDaemon starts bin detached, writes the pid file and waits until the daemon answers. On
// failure it stops the daemon again and removes the pid file.
func startDaemon(ctx context.Context, p localPaths, bin string, timeout time.Duration) (int, error) {
	if err := os.MkdirAll(p.root, 0o700); err != nil {
		return 0, fmt.Errorf("local buildkitd: %w", err)
	}
	if err := os.Rename(p.log, p.log+".1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("local buildkitd: keeping the previous log: %w", err)
	}
	logf, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("local buildkitd: %w", err)
	}
	if err := writeDaemonConfig(p); err != nil {
		return 0, fmt.Errorf("local buildkitd: %w", err)
	}
	cmd := exec.Command(bin, daemonArgs(p)...)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "NOTIFY_SOCKET=") // not a systemd service of ours
	})
	// A session of its own: no controlling terminal, so Ctrl-C in the terminal that ran
	// gpuforge does not reach it, and it outlives gpuforge.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return 0, fmt.Errorf("local buildkitd: starting %s: %w", bin, err)
	}
	pid := cmd.Process.Pid
	// Reap it if it exits while this process lives; exitErr is set before exited closes.
	exited := make(chan struct{})
	var exitErr error
	go func() {
		exitErr = cmd.Wait()
		close(exited)
	}()

	fail := func(err error) (int, error) {
		// Kill the whole session: buildkitd and anything it started.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(daemonKillGrace):
		}
		_ = os.Remove(p.pid)
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return 0, fmt.Errorf("local buildkitd: starting %s: %w", bin, err)
		}
		return 0, fmt.Errorf("local buildkitd: %w; the last lines of %s:\n%s", err, p.log, tailDaemonLog(p.log, daemonLogTailLines))
	}
	if err := writePIDFile(p.pid, []byte(strconv.Itoa(pid)+"\n")); err != nil {
		return fail(fmt.Errorf("writing the pid file: %w", err))
	}
	if err := waitReady(ctx, p.address(), timeout, exited, &exitErr); err != nil {
		return fail(fmt.Errorf("%s (pid %d): %w", bin, pid, err))
	}
	return pid, nil
}

func daemonArgs(p localPaths) []string {
	return []string{
		"--root", p.root,
		"--addr", p.address(),
		"--config", p.config,
		"--oci-worker=true",
		"--containerd-worker=false",
		// GPU checks run inside built images with CDI devices; a build asks for the device
		// entitlement only for those steps.
		"--allow-insecure-entitlement=device",
	}
}

// findBuildkitd returns the buildkitd to start: path when set, else the one next to the
// running executable, else the one on $PATH.
func findBuildkitd(path string) (string, error) {
	if path != "" {
		p, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("buildkitd %q: %w", path, err)
		}
		return p, nil
	}
	exe, err := os.Executable()
	if err == nil {
		p := filepath.Join(filepath.Dir(exe), "buildkitd")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath("buildkitd")
	if err != nil {
		where := "on $PATH"
		if exe != "" {
			where = fmt.Sprintf("next to %s nor on $PATH", exe)
		}
		return "", fmt.Errorf("buildkitd is not %s: install BuildKit's buildkitd, or name a running builder with --builder or BUILDKIT_HOST", where)
	}
	return p, nil
}

// waitReady polls the daemon at addr until it answers, timeout passes, ctx ends or exited
// (when not nil) closes, saying the daemon exited with *exitErr.
func waitReady(ctx context.Context, addr string, timeout time.Duration, exited <-chan struct{}, exitErr *error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = pingDaemon(ctx, addr); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("did not answer on %s within %v: %w", addr, timeout, last)
		}
		select {
		case <-exited:
			err := *exitErr
			if err == nil {
				err = errors.New("exit status 0")
			}
			return fmt.Errorf("exited before it answered on %s: %w", addr, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(daemonPollInterval):
		}
	}
}

// pingDaemon asks the daemon at addr for its workers on a connection of its own (a shared
// gRPC connection would back off between attempts).
func pingDaemon(ctx context.Context, addr string) error {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if _, err := os.Stat(path); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, daemonPingTimeout)
	defer cancel()
	c, err := client.New(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.ListWorkers(ctx)
	return err
}

// runningPID returns the pid of the running buildkitd of this root, or 0 when none runs: the
// pid in the pid file when it names that daemon, else (the pid file was lost, say because
// gpuforge was killed right after it started the daemon) the pid found by scanning /proc.
func runningPID(p localPaths) int {
	if data, err := os.ReadFile(p.pid); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && daemonAlive(pid, p.root) {
			return pid
		}
	}
	return scanForDaemon(p.root)
}

// scanForDaemon returns the pid of a process running with --root root, found through /proc
// (Linux only), or 0.
func scanForDaemon(root string) int {
	if runtime.GOOS != "linux" {
		return 0
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && daemonAlive(pid, root) {
			return pid
		}
	}
	return 0
}

// daemonAlive reports whether pid is a live process running with --root root. Checking the
// command line keeps a pid that the system has since given to another program from being
// taken for the daemon (or signalled); a zombie has an empty command line and counts as gone.
// Where there is no /proc, a live pid is trusted.
func daemonAlive(pid int, root string) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	if runtime.GOOS != "linux" {
		return true
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	for i, a := range args {
		if a == "--root="+root || (a == "--root" && i+1 < len(args) && args[i+1] == root) {
			return true
		}
	}
	return false
}

// stopPID sends SIGTERM to the daemon, waits daemonStopGrace for it to exit, then sends SIGKILL to
// its session and waits daemonKillGrace more.
func stopPID(ctx context.Context, pid int, root string) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	if waitGone(ctx, pid, root, daemonStopGrace) {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL) // its session, as EnsureLocal made it a leader
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("SIGKILL: %w", err)
	}
	if waitGone(ctx, pid, root, daemonKillGrace) {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("pid %d is still running %v after SIGKILL", pid, daemonKillGrace)
}

// waitGone waits up to d for the daemon to exit and reports whether it did.
func waitGone(ctx context.Context, pid int, root string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for daemonAlive(pid, root) {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(daemonPollInterval / 2):
		}
	}
	return true
}

// removeStale removes a socket and pid file left by a daemon that is no longer running.
func removeStale(p localPaths) error {
	for _, f := range []string{p.socket, p.pid} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing the stale %s: %w", f, err)
		}
	}
	return nil
}

// StopLocal stops gpuforge's local buildkitd of stateDir (DefaultStateDir() when empty): SIGTERM,
// then SIGKILL when it has not exited after 10 seconds. It removes the socket and the pid file
// and keeps the root, so the build cache survives for the next daemon. It returns ErrNotRunning
// when no daemon was running (after removing what a dead one left behind). buildkitd exits
// with status 1 after SIGTERM even when it shut down cleanly; that is not an error.
func StopLocal(ctx context.Context, stateDir string) error {
	dir, err := resolveStateDir(stateDir)
	if err != nil {
		return err
	}
	p := newLocalPaths(dir)
	if _, err := os.Stat(p.dir); errors.Is(err, fs.ErrNotExist) {
		return ErrNotRunning
	}
	unlock, err := lockStateDir(ctx, p.lock, 2*defaultDaemonStartTimeout+daemonStopGrace+daemonKillGrace+5*time.Second)
	if err != nil {
		return fmt.Errorf("stopping the local buildkitd: %w", err)
	}
	defer unlock()
	pid := runningPID(p)
	if pid != 0 {
		if err := stopPID(ctx, pid, p.root); err != nil {
			return fmt.Errorf("stopping the local buildkitd (pid %d): %w", pid, err)
		}
	}
	if err := removeStale(p); err != nil {
		return fmt.Errorf("stopping the local buildkitd: %w", err)
	}
	if pid == 0 {
		return ErrNotRunning
	}
	return nil
}

// LocalState describes gpuforge's local buildkitd of one state directory.
type LocalState struct {
	StateDir string // the state directory
	Address  string // where the daemon listens (or would listen): unix:// and the socket's path
	LogPath  string // the daemon's log file
	PID      int    // the daemon's process id; 0 when its pid file names no running buildkitd
	Running  bool   // the daemon's process runs, or something answers on Address
	Ready    bool   // the daemon answers on Address
}

// LocalStatus reports on gpuforge's local buildkitd of stateDir (DefaultStateDir() when empty)
// without starting or stopping anything.
func LocalStatus(ctx context.Context, stateDir string) (LocalState, error) {
	dir, err := resolveStateDir(stateDir)
	if err != nil {
		return LocalState{}, err
	}
	p := newLocalPaths(dir)
	st := LocalState{StateDir: dir, Address: p.address(), LogPath: p.log, PID: runningPID(p)}
	st.Ready = pingDaemon(ctx, st.Address) == nil
	st.Running = st.PID != 0 || st.Ready
	return st, nil
}

// lockStateDir takes an exclusive flock on path, waiting up to wait or until ctx ends, and returns
// the function that releases it. The lock belongs to the open file, so two callers in one
// process exclude each other as two processes do, and the kernel releases it if the process
// dies. Go opens files close-on-exec, so the daemon does not inherit it.
func lockStateDir(ctx context.Context, path string, wait time.Duration) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another gpuforge has held %s for more than %v", path, wait)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for %s: %w", path, ctx.Err())
		case <-time.After(daemonPollInterval / 2):
		}
	}
}

// writePIDFile writes data to a temporary file beside path and renames it over path, so a
// reader never sees half a file.
func writePIDFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// tailDaemonLog returns the last n lines of the file at path, or a note saying why it cannot.
func tailDaemonLog(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read the log: %v)", err)
	}
	data = bytes.TrimRight(data, "\n")
	if len(data) == 0 {
		return "(the log is empty)"
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
