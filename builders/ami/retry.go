package ami

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// retryPolicy says how a call is retried when it fails with an error retryable accepts. The SDK's own
// retryer is switched off on this package's clients (newClients): one policy, with one classification,
// decides, and the errors name the attempts made.
type retryPolicy struct {
	// Attempts is how many times a call is sent at most.
	Attempts int
	// Base is the backoff before the first retry; it doubles with each retry up to Max.
	Base, Max time.Duration
	// AttemptTimeout bounds one attempt, so that a connection that hangs is dropped and retried; 0: none.
	AttemptTimeout time.Duration
	// Retries, when set, counts the retries made.
	Retries *atomic.Int64
}

// defaultRetry allows a throttling storm of a few minutes: 10 attempts, backoffs 0.2 s … 20 s with jitter.
var defaultRetry = retryPolicy{Attempts: 10, Base: 200 * time.Millisecond, Max: 20 * time.Second, AttemptTimeout: 2 * time.Minute}

// backoff is the wait before retry n (n = 1 for the first retry): half of min(Max, Base·2^(n-1)) plus a
// uniformly random part up to the other half ("equal jitter"), so that workers throttled together spread out
// but none retries at once.
func (p retryPolicy) backoff(n int) time.Duration {
	d := p.Base
	for i := 1; i < n && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(d-half)+1))
}

// call runs f until it succeeds, fails with an error that is not retryable, the attempts run out, or ctx ends.
// A failure is returned as an *OpError naming op, resource and region.
func call[T any](ctx context.Context, p retryPolicy, op, resource, region string, f func(context.Context) (T, error)) (T, error) {
	var zero T
	attempts := max(p.Attempts, 1)
	for n := 1; ; n++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if p.AttemptTimeout > 0 {
			actx, cancel = context.WithTimeout(ctx, p.AttemptTimeout)
		}
		v, err := f(actx)
		cancel()
		if err == nil {
			return v, nil
		}
		if ctx.Err() != nil {
			// The caller's context ended: report that, not the transport error it caused.
			return zero, &OpError{Op: op, Resource: resource, Region: region, Attempts: n, Err: context.Cause(ctx)}
		}
		if n >= attempts || !retryable(err) {
			return zero, &OpError{Op: op, Resource: resource, Region: region, Attempts: n, Err: err}
		}
		if p.Retries != nil {
			p.Retries.Add(1)
		}
		t := time.NewTimer(p.backoff(n))
		select {
		case <-ctx.Done():
			t.Stop()
			return zero, &OpError{Op: op, Resource: resource, Region: region, Attempts: n, Err: context.Cause(ctx)}
		case <-t.C:
		}
	}
}
