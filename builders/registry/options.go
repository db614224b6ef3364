package registry

import (
	"context"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gpuforge/gpuforge/recipes"
)

// Option configures Push, Copy and Inspect.
type Option func(*options)

type options struct {
	keychain      authn.Keychain
	registries    []*recipes.Registry
	caFiles       []string
	insecure      bool
	jobs          int
	attempts      int
	backoff       time.Duration
	retryAfterCap time.Duration
	refName       string
	userAgent     string
}

// Defaults of the options.
const (
	DefaultJobs          = 4
	DefaultAttempts      = 5
	DefaultBackoff       = time.Second
	DefaultRetryAfterCap = 30 * time.Second
	DefaultUserAgent     = "gpuforge"
)

func makeOptions(opts []Option) *options {
	o := &options{
		jobs:          DefaultJobs,
		attempts:      DefaultAttempts,
		backoff:       DefaultBackoff,
		retryAfterCap: DefaultRetryAfterCap,
		userAgent:     DefaultUserAgent,
	}
	for _, opt := range opts {
		opt(o)
	}
	if o.jobs < 1 {
		o.jobs = 1
	}
	if o.attempts < 1 {
		o.attempts = 1
	}
	return o
}

// WithKeychain sets where credentials come from.
//
// The default is NewKeychain over the blocks given to WithRegistries (none by default).
func WithKeychain(k authn.Keychain) Option {
	return func(o *options) { o.keychain = k }
}

// WithRegistries applies a recipe's registry blocks: their credentials (unless WithKeychain is
// given), their ca_file for TLS to their host, and their insecure flag.
//
// The default is no blocks.
func WithRegistries(regs []*recipes.Registry) Option {
	return func(o *options) { o.registries = append(o.registries, regs...) }
}

// WithCAFile trusts the PEM certificates in path, as well as the system's roots, for every
// registry the operation talks to. It may be given more than once.
//
// The default is the system's roots only, plus the ca_file of a host's registry block.
func WithCAFile(path string) Option {
	return func(o *options) {
		if path != "" {
			o.caFiles = append(o.caFiles, path)
		}
	}
}

// WithInsecure allows plain HTTP to every registry of the operation (go-containerregistry's
// name.Insecure: HTTPS is tried first, then HTTP). Certificates are still verified when HTTPS
// is used; trust a private CA with WithCAFile instead.
//
// The default allows plain HTTP only to loopback hosts (localhost, 127.0.0.0/8, ::1) and to
// hosts whose registry block sets insecure = true.
func WithInsecure(insecure bool) Option {
	return func(o *options) { o.insecure = insecure }
}

// WithJobs sets how many blobs (layers, configs, child manifests) are uploaded at once.
//
// The default is 4 (DefaultJobs).
func WithJobs(n int) Option {
	return func(o *options) { o.jobs = n }
}

// WithRetry sets how many times a request, or a blob upload as a whole, is attempted when the
// registry answers 5xx (not 501 or 505), 429 or 408 or the connection drops, and the wait
// before the second attempt, which doubles with each further attempt (with 10% jitter). Other
// 4xx are never retried. attempts is at least 1 (no retry).
//
// The default is 5 attempts, waiting 1 s, 2 s, 4 s, then 8 s.
func WithRetry(attempts int, backoff time.Duration) Option {
	return func(o *options) { o.attempts, o.backoff = attempts, backoff }
}

// WithRetryAfterCap bounds how long a Retry-After header on a 429 or 503 response may hold the
// next request to that registry.
//
// The default is 30 s (DefaultRetryAfterCap).
func WithRetryAfterCap(d time.Duration) Option {
	return func(o *options) { o.retryAfterCap = d }
}

// WithRefName makes Push take, from an OCI layout or tarball whose index.json lists several
// manifests, the one whose org.opencontainers.image.ref.name annotation is name; from a docker
// tarball, the image tagged name.
//
// The default pushes the only manifest, or all of them as one index when there are several.
func WithRefName(name string) Option {
	return func(o *options) { o.refName = name }
}

// WithUserAgent sets the User-Agent of every request (go-containerregistry appends its own).
//
// The default is "gpuforge".
func WithUserAgent(ua string) Option {
	return func(o *options) { o.userAgent = ua }
}

// block returns the registry block for host, or nil.
func (o *options) block(host string) *recipes.Registry {
	for _, r := range o.registries {
		if r != nil && canonicalHost(r.Host) == host {
			return r
		}
	}
	return nil
}

// plainHTTPAllowed reports whether requests to host may go without TLS.
func (o *options) plainHTTPAllowed(host string) bool {
	if o.insecure || isLoopback(host) {
		return true
	}
	b := o.block(host)
	return b != nil && b.Insecure
}

// parseRef parses a reference, marking its registry insecure (HTTP allowed after HTTPS fails)
// when plain HTTP is allowed to it.
func (o *options) parseRef(s string) (name.Reference, error) {
	ref, err := name.ParseReference(s)
	if err != nil {
		return nil, err
	}
	if o.plainHTTPAllowed(ref.Context().RegistryStr()) {
		return name.ParseReference(s, name.Insecure)
	}
	return ref, nil
}

// remoteOptions returns the go-containerregistry options for one operation. Credentials handed
// out go through s, so that errors can be scrubbed of them.
func (o *options) remoteOptions(ctx context.Context, s *secrets) ([]remote.Option, error) {
	rt, err := o.transport()
	if err != nil {
		return nil, err
	}
	kc := o.keychain
	if kc == nil {
		kc = NewKeychain(o.registries)
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(recordingKeychain{inner: kc, s: s}),
		remote.WithTransport(rt),
		remote.WithJobs(o.jobs),
		// go-containerregistry applies one policy at two levels without nesting them: each
		// request (transport.NewRetry), and each blob upload or manifest PUT as a whole, which
		// restarts an upload whose connection dropped with a new POST.
		remote.WithRetryBackoff(remote.Backoff{Duration: o.backoff, Factor: 2, Jitter: 0.1, Steps: o.attempts}),
		remote.WithRetryPredicate(retryable),
		remote.WithRetryStatusCodes(retryStatusCodes()...),
		remote.WithUserAgent(o.userAgent),
	}, nil
}
