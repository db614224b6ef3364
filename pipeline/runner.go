package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"syscall"
	"time"
)

// DefaultCleanupTimeout is how long one Cleanup may take unless WithCleanupTimeout says otherwise.
const DefaultCleanupTimeout = 5 * time.Minute

// Runner runs a graph of steps: each step once all the steps it comes after have succeeded, independent steps
// concurrently, and then every started step's Cleanup in reverse order. Make one with NewRunner; a Runner holds
// only its options, so one may serve several runs, at the same time too.
type Runner struct {
	opts options
}

type options struct {
	concurrency    int
	cleanupTimeout time.Duration
	sink           EventSink
	clock          func() time.Time
}

// Option configures a Runner.
type Option func(*options)

// WithConcurrency sets how many steps may run at once; n < 1 means the default. Steps mostly wait on daemons
// and networks, but some (disk assembly, a TCG boot check) are CPU-bound, so the default follows the CPUs Go
// may use. The default is runtime.GOMAXPROCS(0), read when Run is called.
func WithConcurrency(n int) Option {
	return func(o *options) { o.concurrency = n }
}

// WithCleanupTimeout sets how long each Cleanup may take: its context, which the run's cancellation does not
// reach, is cancelled after d. d <= 0 means the default. The default is 5 minutes (DefaultCleanupTimeout).
func WithCleanupTimeout(d time.Duration) Option {
	return func(o *options) { o.cleanupTimeout = d }
}

// WithEventSink sets where the runner sends events, including the log lines steps write with Logf and
// LogWriter. Wrap the sink with Redact when steps may see secrets. The default is no sink: events are dropped.
func WithEventSink(s EventSink) Option {
	return func(o *options) { o.sink = s }
}

// WithClock sets the clock that stamps events and times steps; it must be safe for concurrent use. Tests use it
// to get stable output. The default is time.Now.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.clock = now }
}

// NewRunner returns a Runner with the given options.
func NewRunner(opts ...Option) *Runner {
	o := options{cleanupTimeout: DefaultCleanupTimeout, clock: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.cleanupTimeout <= 0 {
		o.cleanupTimeout = DefaultCleanupTimeout
	}
	if o.clock == nil {
		o.clock = time.Now
	}
	return &Runner{opts: o}
}

// Result is what a run did.
type Result struct {
	Outcome  Outcome
	Started  time.Time
	Finished time.Time    // after the last cleanup
	Steps    []StepResult // one per node, in the order of the nodes given to Run
}

// Step returns the result of the step with the given ID.
func (r *Result) Step(id string) (StepResult, bool) {
	i := slices.IndexFunc(r.Steps, func(s StepResult) bool { return s.ID == id })
	if i < 0 {
		return StepResult{}, false
	}
	return r.Steps[i], true
}

// StepResult is what became of one step.
type StepResult struct {
	ID       string
	Status   Status
	Err      error          // what Run returned (a *PanicError if it panicked); nil unless failed or cancelled
	Started  time.Time      // zero if skipped
	Duration time.Duration  // of Run; zero if skipped
	Cleanup  *CleanupResult // nil if Cleanup was not called, that is if Run was not
}

// CleanupResult is what became of one step's Cleanup.
type CleanupResult struct {
	Outcome  Outcome // the outcome passed to Cleanup
	Status   Status  // succeeded or failed
	Err      error   // what Cleanup returned (a *PanicError if it panicked)
	Duration time.Duration
}

// StepError is a step's Run failing. Runner.Run's error wraps one per failed step.
type StepError struct {
	StepID string
	Err    error
}

var _ error = (*StepError)(nil)

func (e *StepError) Error() string { return fmt.Sprintf("step %q: %v", e.StepID, e.Err) }

// Unwrap returns e.Err.
func (e *StepError) Unwrap() error { return e.Err }

// CleanupError is a step's Cleanup failing. Runner.Run's error wraps one per failed cleanup: something the
// step created may have been left behind.
type CleanupError struct {
	StepID string
	Err    error
}

var _ error = (*CleanupError)(nil)

func (e *CleanupError) Error() string { return fmt.Sprintf("cleanup of step %q: %v", e.StepID, e.Err) }

// Unwrap returns e.Err.
func (e *CleanupError) Unwrap() error { return e.Err }

// PanicError is a panic in a step's Run or Cleanup, recovered by the runner.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the panicking goroutine's stack
}

var _ error = (*PanicError)(nil)

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Unwrap returns the panic value if it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Run runs the steps of nodes after checking them with ValidateGraph; a graph error is returned with a nil
// Result and no step runs.
//
// A step starts once every step in its After has succeeded, at most WithConcurrency steps at a time; among
// steps ready together, the one earlier in nodes starts first. When a step fails (returns an error or panics),
// or ctx is done, no further step starts and the context of every running step is cancelled. Once no step is
// running, the runner calls Cleanup for every step whose Run it called, strictly one at a time, in reverse order
// of Run starting, with the run's Outcome. Each Cleanup gets a fresh context: context.WithoutCancel(ctx) with
// the cleanup timeout, so that Ctrl-C does not cancel the cleanup itself. Cleanups also run when every step
// succeeded; a step that keeps what it made on success checks the outcome.
//
// The error is nil when the outcome is OutcomeSucceeded and every cleanup succeeded. Otherwise it joins, with
// errors.Join: for OutcomeFailed, a *StepError per failed step; for OutcomeCancelled, an error wrapping ctx's
// error (context.Canceled, or context.DeadlineExceeded) and its cause (context.Cause, e.g. a *SignalError); and
// a *CleanupError per failed cleanup, whatever the outcome. The Result is never nil unless the graph is
// invalid.
func (r *Runner) Run(ctx context.Context, nodes []Node) (*Result, error) {
	if err := ValidateGraph(nodes); err != nil {
		return nil, fmt.Errorf("invalid step graph: %w", err)
	}
	o := r.opts
	limit := o.concurrency
	if limit < 1 {
		limit = runtime.GOMAXPROCS(0)
	}
	em := &emitter{sink: o.sink, clock: o.clock}
	defer em.close()

	n := len(nodes)
	index := make(map[string]int, n)
	for i, nd := range nodes {
		index[nd.Step.ID()] = i
	}
	waiting := make([]int, n)      // dependencies not yet succeeded
	dependents := make([][]int, n) // nodes that come after this one
	for i, nd := range nodes {
		seen := make(map[int]bool, len(nd.After))
		for _, dep := range nd.After {
			j := index[dep]
			if seen[j] {
				continue
			}
			seen[j] = true
			waiting[i]++
			dependents[j] = append(dependents[j], i)
		}
	}

	res := &Result{Started: o.clock(), Steps: make([]StepResult, n)}
	var ready []int // indexes of startable nodes, ascending
	for i, nd := range nodes {
		res.Steps[i] = StepResult{ID: nd.Step.ID(), Status: StatusSkipped}
		if waiting[i] == 0 {
			ready = append(ready, i)
		}
	}

	runCtx, abort := context.WithCancelCause(ctx)
	defer abort(nil)

	type finished struct {
		i   int
		err error
		at  time.Time
	}
	done := make(chan finished)
	var (
		started  []int // nodes whose Run was called, in order
		inflight int
		failures []error
	)
	for {
		for inflight < limit && len(ready) > 0 && runCtx.Err() == nil {
			i := ready[0]
			ready = ready[1:]
			step := nodes[i].Step
			sr := &res.Steps[i]
			sr.Started = o.clock()
			started = append(started, i)
			inflight++
			em.emit(Event{Time: sr.Started, Type: EventStepStarted, Step: sr.ID})
			stepCtx := withStepLog(runCtx, em, sr.ID)
			go func() {
				err := runStep(stepCtx, step)
				done <- finished{i: i, err: err, at: o.clock()}
			}()
		}
		if inflight == 0 {
			break
		}
		f := <-done
		inflight--
		sr := &res.Steps[f.i]
		sr.Duration = f.at.Sub(sr.Started)
		switch {
		case f.err == nil:
			sr.Status = StatusSucceeded
			for _, j := range dependents[f.i] {
				if waiting[j]--; waiting[j] == 0 {
					k, _ := slices.BinarySearch(ready, j)
					ready = slices.Insert(ready, k, j)
				}
			}
		case runCtx.Err() != nil:
			// The run was already stopping: whatever Run returned is a consequence, not the cause.
			sr.Status, sr.Err = StatusCancelled, f.err
		default:
			sr.Status, sr.Err = StatusFailed, f.err
			stepErr := &StepError{StepID: sr.ID, Err: f.err}
			failures = append(failures, stepErr)
			abort(stepErr)
		}
		ev := Event{Time: f.at, Type: EventStepFinished, Step: sr.ID, Status: sr.Status, Duration: sr.Duration}
		if sr.Err != nil {
			ev.Error = sr.Err.Error()
		}
		em.emit(ev)
	}

	allSucceeded := true
	for i := range res.Steps {
		if sr := &res.Steps[i]; sr.Status == StatusSkipped {
			allSucceeded = false
			em.emit(Event{Type: EventStepFinished, Step: sr.ID, Status: StatusSkipped})
		} else if sr.Status != StatusSucceeded {
			allSucceeded = false
		}
	}
	var errs []error
	switch {
	case len(failures) > 0:
		res.Outcome = OutcomeFailed
		errs = failures
	case !allSucceeded:
		// Only a done ctx stops a run that has no failure.
		res.Outcome = OutcomeCancelled
		errs = []error{cancelError(ctx)}
	default:
		res.Outcome = OutcomeSucceeded
	}

	for _, i := range slices.Backward(started) {
		if err := r.cleanup(ctx, em, nodes[i].Step, res.Outcome, &res.Steps[i]); err != nil {
			errs = append(errs, err)
		}
	}
	res.Finished = o.clock()
	return res, errors.Join(errs...)
}

// cancelError says why ctx ended a run: it wraps ctx.Err() and, when it says more, context.Cause(ctx).
func cancelError(ctx context.Context) error {
	err := ctx.Err()
	if err == nil { // cannot happen; be explicit rather than return nil
		return errors.New("run stopped before every step ran")
	}
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("run cancelled: %w: %w", err, cause)
	}
	return fmt.Errorf("run cancelled: %w", err)
}

// cleanup calls step's Cleanup with a fresh context and records the result in sr.
func (r *Runner) cleanup(ctx context.Context, em *emitter, step Step, outcome Outcome, sr *StepResult) error {
	o := r.opts
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cleanupTimeout)
	defer cancel()
	cctx = withStepLog(cctx, em, sr.ID)

	start := o.clock()
	em.emit(Event{Time: start, Type: EventCleanupStarted, Step: sr.ID, Outcome: outcome})
	err := cleanupStep(cctx, step, outcome)
	end := o.clock()

	cr := &CleanupResult{Outcome: outcome, Status: StatusSucceeded, Err: err, Duration: end.Sub(start)}
	ev := Event{Time: end, Type: EventCleanupFinished, Step: sr.ID, Outcome: outcome, Duration: cr.Duration}
	if err != nil {
		cr.Status = StatusFailed
		ev.Error = err.Error()
	}
	ev.Status = cr.Status
	sr.Cleanup = cr
	em.emit(ev)
	if err != nil {
		return &CleanupError{StepID: sr.ID, Err: err}
	}
	return nil
}

// runStep calls step.Run, turning a panic into a *PanicError.
func runStep(ctx context.Context, step Step) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return step.Run(ctx)
}

// cleanupStep calls step.Cleanup, turning a panic into a *PanicError.
func cleanupStep(ctx context.Context, step Step, outcome Outcome) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return step.Cleanup(ctx, outcome)
}

// SignalError is the cause of a SignalContext's cancellation: the process received Signal.
type SignalError struct {
	Signal os.Signal
}

var _ error = (*SignalError)(nil)

func (e *SignalError) Error() string { return "received signal " + e.Signal.String() }

// SignalContext returns a context that is cancelled, with a *SignalError naming the signal as its cause
// (context.Cause), when the process receives SIGINT (Ctrl-C) or SIGTERM, or when parent is done, or when the
// returned CancelFunc is called. Hand it to Runner.Run: the run stops and cleans up, then Run returns an error
// wrapping context.Canceled and the *SignalError.
//
// Only the first signal is caught: after it, and after cancel, the signals' default handling is restored, so a
// second Ctrl-C terminates the process at once, without cleanups. Call cancel when done to release resources.
func SignalContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case s := <-sigs:
			signal.Stop(sigs)
			cancel(&SignalError{Signal: s})
		case <-ctx.Done():
			signal.Stop(sigs)
		}
	}()
	return ctx, func() {
		cancel(context.Canceled)
		<-stopped
	}
}
