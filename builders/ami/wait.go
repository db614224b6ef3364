package ami

import (
	"context"
	"fmt"
	"time"
)

// Polling intervals of the waits: the first check comes after pollFirst, then the interval grows by half up
// to pollMax. Tests shorten them.
var (
	pollFirst = 500 * time.Millisecond
	pollMax   = 15 * time.Second
)

// errWaitTimeout is returned, wrapped, when a wait runs out of time.
type waitTimeoutError struct {
	What    string
	Timeout time.Duration
	Last    string
}

func (e *waitTimeoutError) Error() string {
	s := fmt.Sprintf("%s: still not done after %s", e.What, e.Timeout)
	if e.Last != "" {
		s += " (last seen: " + e.Last + ")"
	}
	return s
}

// poll calls check until it reports done, fails, ctx ends or timeout (0: none) passes. check returns a
// short description of the state it saw, for the timeout's message.
func poll(ctx context.Context, timeout time.Duration, what string, check func(context.Context) (done bool, state string, err error)) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, &waitTimeoutError{What: what, Timeout: timeout})
		defer cancel()
	}
	interval := pollFirst
	var last string
	for {
		done, state, err := check(ctx)
		if state != "" {
			last = state
		}
		if err != nil {
			if cause := context.Cause(ctx); cause != nil {
				if wt, ok := cause.(*waitTimeoutError); ok {
					wt.Last = last
					return wt
				}
			}
			return err
		}
		if done {
			return nil
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			cause := context.Cause(ctx)
			if wt, ok := cause.(*waitTimeoutError); ok {
				wt.Last = last
			}
			return cause
		case <-t.C:
		}
		interval = min(interval*3/2, pollMax)
	}
}
