package pipeline

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// guardTimeout bounds every wait in these tests: nothing here should take more than a fraction of a second.
const guardTimeout = 10 * time.Second

// guard runs f and fails the test, printing every goroutine's stack, if f has not returned after
// guardTimeout.
func guard(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(guardTimeout):
		t.Fatalf("deadlock guard: still running after %v\n%s", guardTimeout, allStacks())
	}
}

// waitFor blocks until ch is closed, failing the test after guardTimeout.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(guardTimeout):
		t.Fatalf("deadlock guard: %s did not happen within %v\n%s", what, guardTimeout, allStacks())
	}
}

// await is waitFor for code inside a step, which cannot call t.Fatal: it returns an error instead.
func await(ctx context.Context, ch <-chan struct{}, what string) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(guardTimeout):
		return errors.New("deadlock guard: " + what + " did not happen\n" + allStacks())
	}
}

// blockUntilDone waits for ctx to be done and returns its error; after guardTimeout it gives up with an
// error, so that a runner that fails to cancel cannot hang the test.
func blockUntilDone(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(guardTimeout):
		return errors.New("deadlock guard: context never cancelled\n" + allStacks())
	}
}

func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// recorder logs what steps do, in order, from any goroutine.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, s)
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// step returns a step that records "run ID" before calling run (if any) and "cleanup ID OUTCOME" on cleanup.
func (r *recorder) step(id string, run RunFunc) Step {
	return NewStep(id,
		func(ctx context.Context) error {
			r.add("run " + id)
			if run != nil {
				return run(ctx)
			}
			return nil
		},
		func(ctx context.Context, o Outcome) error {
			r.add("cleanup " + id + " " + string(o))
			return nil
		})
}

// run runs nodes under the deadlock guard.
func run(t *testing.T, ctx context.Context, nodes []Node, opts ...Option) (res *Result, err error) {
	t.Helper()
	guard(t, func() { res, err = NewRunner(opts...).Run(ctx, nodes) })
	return res, err
}

func statuses(res *Result) map[string]Status {
	m := map[string]Status{}
	for _, s := range res.Steps {
		m[s.ID] = s.Status
	}
	return m
}

func diff(t *testing.T, what string, want, got any) {
	t.Helper()
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("%s (-want +got):\n%s", what, d)
	}
}

func TestRunnerSuccessOrder(t *testing.T) {
	var rec recorder
	nodes := []Node{
		{Step: rec.step("a", nil)},
		{Step: rec.step("b", nil), After: []string{"a"}},
		{Step: rec.step("c", nil), After: []string{"b", "a", "b"}},
		{Step: rec.step("x", nil)},
	}
	res, err := run(t, context.Background(), nodes, WithConcurrency(1))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	// With one step at a time, the ready step earliest in nodes starts first: a (x is ready too), then b
	// (ready once a succeeded, and before x in nodes), then c, then x.
	diff(t, "order", []string{
		"run a", "run b", "run c", "run x",
		"cleanup x succeeded", "cleanup c succeeded", "cleanup b succeeded", "cleanup a succeeded",
	}, rec.get())
	if res.Outcome != OutcomeSucceeded {
		t.Errorf("Outcome = %q, want succeeded", res.Outcome)
	}
	for _, s := range res.Steps {
		if s.Status != StatusSucceeded || s.Err != nil || s.Started.IsZero() || s.Cleanup == nil ||
			s.Cleanup.Status != StatusSucceeded || s.Cleanup.Outcome != OutcomeSucceeded {
			t.Errorf("step %s: %+v, cleanup %+v", s.ID, s, s.Cleanup)
		}
	}
	if got := res.Steps[2].ID; got != "c" {
		t.Errorf("Steps[2].ID = %q, want c: Steps keep node order", got)
	}
	if res.Finished.Before(res.Started) {
		t.Errorf("Finished %v before Started %v", res.Finished, res.Started)
	}
}

func TestRunnerEmptyGraph(t *testing.T) {
	res, err := run(t, context.Background(), nil)
	if err != nil || res.Outcome != OutcomeSucceeded || len(res.Steps) != 0 {
		t.Fatalf("Run(nil) = %+v, %v; want success with no steps", res, err)
	}
}

func TestRunnerFailureStopsAndCleansUp(t *testing.T) {
	var rec recorder
	errBoom := errors.New("boom")
	nodes := []Node{
		{Step: rec.step("a", nil)},
		{Step: rec.step("b", func(context.Context) error { return errBoom }), After: []string{"a"}},
		{Step: rec.step("c", nil), After: []string{"b"}},
		{Step: rec.step("d", nil)}, // ready from the start, but after b in node order
	}
	res, err := run(t, context.Background(), nodes, WithConcurrency(1))
	diff(t, "order", []string{"run a", "run b", "cleanup b failed", "cleanup a failed"}, rec.get())
	diff(t, "statuses", map[string]Status{
		"a": StatusSucceeded, "b": StatusFailed, "c": StatusSkipped, "d": StatusSkipped,
	}, statuses(res))
	if res.Outcome != OutcomeFailed {
		t.Errorf("Outcome = %q, want failed", res.Outcome)
	}
	if !errors.Is(err, errBoom) {
		t.Errorf("Run error %v does not wrap the step's error", err)
	}
	var se *StepError
	if !errors.As(err, &se) || se.StepID != "b" {
		t.Errorf("Run error %v: want a *StepError for b", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Errorf("Run error %v wraps context.Canceled; the run failed, it was not cancelled", err)
	}
	if b, _ := res.Step("b"); !errors.Is(b.Err, errBoom) {
		t.Errorf("Step(b).Err = %v, want boom", b.Err)
	}
	if c, _ := res.Step("c"); c.Cleanup != nil || !c.Started.IsZero() {
		t.Errorf("skipped step c has cleanup %+v, started %v", c.Cleanup, c.Started)
	}
}

func TestRunnerFailureCancelsRunningSteps(t *testing.T) {
	var rec recorder
	errBoom := errors.New("boom")
	slowStarted := make(chan struct{})
	var slowCause atomic.Value
	nodes := []Node{
		{Step: rec.step("slow", func(ctx context.Context) error {
			close(slowStarted)
			err := blockUntilDone(ctx)
			slowCause.Store(context.Cause(ctx))
			return err
		})},
		{Step: rec.step("bad", func(ctx context.Context) error {
			if err := await(ctx, slowStarted, "slow started"); err != nil {
				return err
			}
			return errBoom
		})},
		{Step: rec.step("later", nil), After: []string{"bad"}},
	}
	res, err := run(t, context.Background(), nodes, WithConcurrency(2))
	diff(t, "statuses", map[string]Status{
		"slow": StatusCancelled, "bad": StatusFailed, "later": StatusSkipped,
	}, statuses(res))
	if slow, _ := res.Step("slow"); !errors.Is(slow.Err, context.Canceled) {
		t.Errorf("slow's Err = %v, want context.Canceled", slow.Err)
	}
	var se *StepError
	if cause, _ := slowCause.Load().(error); !errors.As(cause, &se) || se.StepID != "bad" {
		t.Errorf("context.Cause in slow = %v, want the *StepError of bad", cause)
	}
	if !errors.Is(err, errBoom) || errors.Is(err, context.Canceled) {
		t.Errorf("Run error = %v; want bad's error only, not the cancelled step's", err)
	}
	got := rec.get()
	diff(t, "cleanups", []string{"cleanup bad failed", "cleanup slow failed"}, got[len(got)-2:])
}

func TestRunnerCancel(t *testing.T) {
	var rec recorder
	errUser := errors.New("user pressed stop")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	blocking := make(chan struct{})
	type cleanupCtx struct {
		err         error
		hasDeadline bool
	}
	cleanupCtxs := make(chan cleanupCtx, 3)
	cleanupOf := func(id string) CleanupFunc {
		return func(ctx context.Context, o Outcome) error {
			_, ok := ctx.Deadline()
			cleanupCtxs <- cleanupCtx{err: ctx.Err(), hasDeadline: ok}
			rec.add("cleanup " + id + " " + string(o))
			return nil
		}
	}
	nodes := []Node{
		{Step: NewStep("a", func(context.Context) error { rec.add("run a"); return nil }, cleanupOf("a"))},
		{Step: NewStep("block", func(ctx context.Context) error {
			rec.add("run block")
			close(blocking)
			return blockUntilDone(ctx)
		}, cleanupOf("block")), After: []string{"a"}},
		{Step: NewStep("c", func(context.Context) error { rec.add("run c"); return nil }, cleanupOf("c")),
			After: []string{"block"}},
	}
	go func() {
		<-blocking
		cancel(errUser)
	}()
	res, err := run(t, ctx, nodes, WithConcurrency(4))

	diff(t, "order", []string{"run a", "run block", "cleanup block cancelled", "cleanup a cancelled"}, rec.get())
	diff(t, "statuses", map[string]Status{
		"a": StatusSucceeded, "block": StatusCancelled, "c": StatusSkipped,
	}, statuses(res))
	if res.Outcome != OutcomeCancelled {
		t.Errorf("Outcome = %q, want cancelled", res.Outcome)
	}
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errUser) {
		t.Errorf("Run error = %v; want it to wrap context.Canceled and the cause", err)
	}
	if !strings.Contains(err.Error(), errUser.Error()) {
		t.Errorf("Run error %q does not name the cause", err)
	}
	close(cleanupCtxs)
	for c := range cleanupCtxs {
		if c.err != nil {
			t.Errorf("a cleanup's context was done when the cleanup ran: %v", c.err)
		}
		if !c.hasDeadline {
			t.Errorf("a cleanup's context has no deadline; want the cleanup timeout")
		}
	}
}

func TestRunnerCancelledBeforeStart(t *testing.T) {
	var rec recorder
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := run(t, ctx, []Node{{Step: rec.step("a", nil)}})
	if len(rec.get()) != 0 {
		t.Errorf("steps ran: %v", rec.get())
	}
	if res.Outcome != OutcomeCancelled || res.Steps[0].Status != StatusSkipped {
		t.Errorf("Outcome %q, status %q; want cancelled, skipped", res.Outcome, res.Steps[0].Status)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run error = %v, want context.Canceled", err)
	}
}

func TestRunnerRunsIndependentStepsConcurrently(t *testing.T) {
	// A barrier: each step announces it is running, then waits for the other. If the runner ran them one
	// at a time, the first would wait forever (until the guard) and fail.
	arrived := map[string]chan struct{}{"a": make(chan struct{}), "b": make(chan struct{})}
	meet := func(me, other string) RunFunc {
		return func(ctx context.Context) error {
			close(arrived[me])
			return await(ctx, arrived[other], other+" running at the same time as "+me)
		}
	}
	nodes := []Node{
		{Step: NewStep("a", meet("a", "b"), nil)},
		{Step: NewStep("b", meet("b", "a"), nil)},
	}
	if _, err := run(t, context.Background(), nodes, WithConcurrency(2)); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestRunnerConcurrencyLimit(t *testing.T) {
	const limit = 2
	var inflight, peak atomic.Int32
	var nodes []Node
	for _, id := range []string{"a", "b", "c", "d", "e", "f"} {
		nodes = append(nodes, Node{Step: NewStep(id, func(context.Context) error {
			n := inflight.Add(1)
			defer inflight.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			for range 100 {
				runtime.Gosched()
			}
			return nil
		}, nil)})
	}
	if _, err := run(t, context.Background(), nodes, WithConcurrency(limit)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if p := peak.Load(); p > limit {
		t.Errorf("%d steps ran at once; limit %d", p, limit)
	}
}

func TestRunnerDependencyGating(t *testing.T) {
	// Diamond: d comes after b and c. b finishes at once; c waits for the test. d must not start until the
	// test releases c, even though b, one of its dependencies, has finished.
	var rec recorder
	bFinished := make(chan struct{})
	releaseC := make(chan struct{})
	sink := SinkFunc(func(e Event) {
		if e.Type == EventStepFinished && e.Step == "b" {
			close(bFinished)
		}
	})
	nodes := []Node{
		{Step: rec.step("a", nil)},
		{Step: rec.step("b", nil), After: []string{"a"}},
		{Step: rec.step("c", func(ctx context.Context) error { return await(ctx, releaseC, "release of c") }),
			After: []string{"a"}},
		{Step: rec.step("d", nil), After: []string{"b", "c"}},
	}
	done := make(chan struct{})
	var res *Result
	var err error
	go func() {
		defer close(done)
		res, err = NewRunner(WithConcurrency(4), WithEventSink(sink)).Run(context.Background(), nodes)
	}()
	waitFor(t, bFinished, "b finishing")
	for _, e := range rec.get() {
		if e == "run d" {
			t.Errorf("d ran while c, one of its dependencies, was still running")
		}
	}
	close(releaseC)
	waitFor(t, done, "the run finishing")
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	got := rec.get()
	if got[0] != "run a" || got[3] != "run d" {
		t.Errorf("order %v: want a first and d after b and c", got)
	}
	diff(t, "cleanups", []string{"cleanup d succeeded"}, got[4:5])
	if res.Outcome != OutcomeSucceeded {
		t.Errorf("Outcome = %q", res.Outcome)
	}
}

func TestRunnerRejectsInvalidGraph(t *testing.T) {
	var rec recorder
	nodes := []Node{
		{Step: rec.step("a", nil), After: []string{"b"}},
		{Step: rec.step("b", nil), After: []string{"a"}},
	}
	res, err := run(t, context.Background(), nodes)
	if !errors.Is(err, ErrCycle) || res != nil {
		t.Errorf("Run = %v, %v; want nil and a cycle error", res, err)
	}
	if len(rec.get()) != 0 {
		t.Errorf("steps ran: %v", rec.get())
	}
}

func TestRunnerStepPanic(t *testing.T) {
	var rec recorder
	nodes := []Node{
		{Step: rec.step("ok", nil)},
		{Step: NewStep("panics",
			func(context.Context) error { panic("kaboom") },
			func(ctx context.Context, o Outcome) error {
				rec.add("cleanup panics " + string(o))
				panic(errors.New("cleanup kaboom"))
			}), After: []string{"ok"}},
	}
	res, err := run(t, context.Background(), nodes, WithConcurrency(1))
	if res.Outcome != OutcomeFailed {
		t.Errorf("Outcome = %q, want failed", res.Outcome)
	}
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "kaboom" || !strings.Contains(string(pe.Stack), "runner_test.go") {
		t.Errorf("Run error = %v; want a *PanicError with the value and the step's stack", err)
	}
	var ce *CleanupError
	if !errors.As(err, &ce) || ce.StepID != "panics" || !strings.Contains(ce.Error(), "cleanup kaboom") {
		t.Errorf("Run error = %v; want the cleanup's panic as a *CleanupError", err)
	}
	diff(t, "order", []string{"run ok", "cleanup panics failed", "cleanup ok failed"}, rec.get())
}

func TestRunnerCleanupErrorsReported(t *testing.T) {
	errOne, errTwo := errors.New("snapshot snap-1 still in use"), errors.New("tag delete denied")
	var rec recorder
	failing := func(id string, err error) Step {
		return NewStep(id, nil, func(context.Context, Outcome) error { rec.add("cleanup " + id); return err })
	}
	nodes := []Node{
		{Step: failing("one", errOne)},
		{Step: failing("two", errTwo), After: []string{"one"}},
		{Step: failing("three", nil), After: []string{"two"}},
	}
	res, err := run(t, context.Background(), nodes)
	if res.Outcome != OutcomeSucceeded {
		t.Errorf("Outcome = %q; failed cleanups do not change it", res.Outcome)
	}
	if !errors.Is(err, errOne) || !errors.Is(err, errTwo) {
		t.Errorf("Run error = %v; want both cleanup errors", err)
	}
	diff(t, "cleanups", []string{"cleanup three", "cleanup two", "cleanup one"}, rec.get())
	for id, want := range map[string]Status{"one": StatusFailed, "two": StatusFailed, "three": StatusSucceeded} {
		if s, _ := res.Step(id); s.Cleanup.Status != want {
			t.Errorf("step %s cleanup status %q, want %q", id, s.Cleanup.Status, want)
		}
	}

	// On failure, the step's error and the cleanup's are both reported.
	errStep := errors.New("build failed")
	nodes = []Node{{Step: NewStep("x", func(context.Context) error { return errStep },
		func(context.Context, Outcome) error { return errOne })}}
	_, err = run(t, context.Background(), nodes)
	if !errors.Is(err, errStep) || !errors.Is(err, errOne) {
		t.Errorf("Run error = %v; want the step's and the cleanup's errors", err)
	}
}

func TestRunnerCleanupTimeout(t *testing.T) {
	nodes := []Node{{Step: NewStep("hangs", nil, func(ctx context.Context, _ Outcome) error {
		return blockUntilDone(ctx)
	})}}
	res, err := run(t, context.Background(), nodes, WithCleanupTimeout(20*time.Millisecond))
	var ce *CleanupError
	if !errors.As(err, &ce) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run error = %v; want a *CleanupError wrapping DeadlineExceeded", err)
	}
	if res.Steps[0].Cleanup.Status != StatusFailed {
		t.Errorf("cleanup status %q, want failed", res.Steps[0].Cleanup.Status)
	}
}

func TestSignalContextSIGINT(t *testing.T) {
	p, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := SignalContext(context.Background())
	defer stop()

	var rec recorder
	blocking := make(chan struct{})
	cleanupCtxErr := make(chan error, 2)
	cleanup := func(id string) CleanupFunc {
		return func(ctx context.Context, o Outcome) error {
			cleanupCtxErr <- ctx.Err()
			rec.add("cleanup " + id + " " + string(o))
			return nil
		}
	}
	nodes := []Node{
		{Step: NewStep("upload", func(context.Context) error { return nil }, cleanup("upload"))},
		{Step: NewStep("register", func(ctx context.Context) error {
			close(blocking)
			return blockUntilDone(ctx)
		}, cleanup("register")), After: []string{"upload"}},
	}
	sent := make(chan error, 1)
	go func() {
		<-blocking
		// The same kill(2) as syscall.Kill(os.Getpid(), syscall.SIGINT), but it compiles everywhere.
		err := p.Signal(syscall.SIGINT)
		if err != nil {
			stop() // let the run end; the test is skipped below
		}
		sent <- err
	}()
	res, err := run(t, ctx, nodes)
	if serr := <-sent; serr != nil {
		t.Skipf("cannot send SIGINT to self here: %v", serr)
	}
	diff(t, "cleanups", []string{"cleanup register cancelled", "cleanup upload cancelled"}, rec.get())
	if res.Outcome != OutcomeCancelled {
		t.Errorf("Outcome = %q, want cancelled", res.Outcome)
	}
	var se *SignalError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &se) || se.Signal != os.Interrupt {
		t.Errorf("Run error = %v; want context.Canceled and a *SignalError for SIGINT", err)
	}
	if !strings.Contains(err.Error(), "interrupt") {
		t.Errorf("Run error %q does not name the signal", err)
	}
	close(cleanupCtxErr)
	for e := range cleanupCtxErr {
		if e != nil {
			t.Errorf("cleanup context done during cleanup: %v", e)
		}
	}
}

func TestSignalContextStop(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.Background())
	ctx, stop := SignalContext(parent)
	if ctx.Err() != nil {
		t.Fatalf("fresh SignalContext is done: %v", ctx.Err())
	}
	cancelParent()
	waitFor(t, ctx.Done(), "the parent's cancellation reaching the SignalContext")
	guard(t, stop) // after the parent is done, stop must not block
	guard(t, stop) // and may be called again

	ctx, stop = SignalContext(context.Background())
	guard(t, stop)
	if !errors.Is(context.Cause(ctx), context.Canceled) {
		t.Errorf("cause after stop = %v, want context.Canceled", context.Cause(ctx))
	}
}
