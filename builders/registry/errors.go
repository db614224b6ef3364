package registry

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Kind classifies a registry failure by what the caller can do about it.
type Kind int

const (
	// KindFailed is every failure not classified below: bad input, a refused plain-HTTP
	// connection, a certificate that does not verify, a permanent server error.
	KindFailed Kind = iota
	// KindAuth means the registry refused the credentials (401) or the operation (403), or no
	// credentials could be found for it.
	KindAuth
	// KindNotFound means the repository, manifest or blob does not exist (404).
	KindNotFound
	// KindTransient means the registry was unavailable, rate-limited the client or dropped the
	// connection (5xx, 429, resets, timeouts), and the attempts allowed ran out: trying again
	// later may succeed.
	KindTransient
)

func (k Kind) String() string {
	switch k {
	case KindAuth:
		return "authentication denied"
	case KindNotFound:
		return "not found"
	case KindTransient:
		return "temporarily unavailable"
	default:
		return "failed"
	}
}

// Sentinel errors to match a *Error's Kind with errors.Is: errors.Is(err, registry.ErrAuth).
var (
	ErrAuth      = errors.New("registry: authentication denied")
	ErrNotFound  = errors.New("registry: not found")
	ErrTransient = errors.New("registry: temporarily unavailable")
)

// Error is what every operation of this package returns when it fails. It names the registry
// host and repository and says what kind of failure it was. Its message never contains a
// credential: every password, token and basic-auth string the operation handed to the registry
// is replaced by "[redacted]", and so are the query values of URLs (pre-signed blob URLs carry
// signatures there). Err, the unredacted cause, is kept for errors.As; print Error().
type Error struct {
	// Op is the operation: "push", "copy", "inspect".
	Op string
	// Host is the registry host (with its port, if any), as in the reference.
	Host string
	// Repository is the repository path within the registry, such as "ml/trainer".
	Repository string
	// Kind classifies the failure.
	Kind Kind
	// StatusCode is the HTTP status of the response that failed the operation, or 0.
	StatusCode int
	// Err is the cause.
	Err error

	msg string
}

var _ error = (*Error)(nil)

func (e *Error) Error() string { return e.msg }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is matches ErrAuth, ErrNotFound and ErrTransient by Kind.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrAuth:
		return e.Kind == KindAuth
	case ErrNotFound:
		return e.Kind == KindNotFound
	case ErrTransient:
		return e.Kind == KindTransient
	}
	return false
}

// Temporary reports whether trying the operation again later may succeed, like
// transport.Error's method of the same name.
func (e *Error) Temporary() bool { return e.Kind == KindTransient }

// newError wraps err, the failure of operation op, into an *Error. The host and repository
// come from the failing request when err carries one and it was sent to one of refs' registries,
// else from refs[0]. Secrets known to s are removed from the message.
func newError(op string, err error, s *secrets, refs ...name.Reference) *Error {
	var already *Error
	if errors.As(err, &already) {
		return already
	}
	e := &Error{Op: op, Err: err, Kind: classify(err)}
	if len(refs) > 0 {
		e.Host, e.Repository = refs[0].Context().RegistryStr(), refs[0].Context().RepositoryStr()
	}
	if u := failedURL(err); u != nil {
		for _, r := range refs {
			if r.Context().RegistryStr() == u.Host {
				e.Host = u.Host
				e.Repository = r.Context().RepositoryStr()
				if repo := repositoryFromPath(u.Path); repo != "" {
					e.Repository = repo
				}
				break
			}
		}
	}
	var te *transport.Error
	if errors.As(err, &te) {
		e.StatusCode = te.StatusCode
	}
	where := e.Host
	if e.Repository != "" {
		where += "/" + e.Repository
	}
	e.msg = s.redact(fmt.Sprintf("%s %s: %s: %s", op, where, e.Kind, redactURLs(err)))
	return e
}

// queryAllowlist are the query parameters whose values stay in messages: the rest may be
// credentials, such as the signature of a pre-signed blob URL a registry redirected to.
var queryAllowlist = map[string]bool{"digest": true, "mount": true, "from": true, "n": true, "last": true, "scope": true, "service": true}

// redactURLs returns err's message with the query values of the URL of a failed request (as
// net/http reports it in a *url.Error, unredacted) replaced, as go-containerregistry does for
// its own errors (internal/redact).
func redactURLs(err error) string {
	msg := err.Error()
	var ue *url.Error
	if !errors.As(err, &ue) {
		return msg
	}
	u, perr := url.Parse(ue.URL)
	if perr != nil || u.RawQuery == "" {
		return msg
	}
	q := u.Query()
	for k, vs := range q {
		if !queryAllowlist[k] {
			for i := range vs {
				vs[i] = "REDACTED"
			}
		}
	}
	r := *u
	r.RawQuery = q.Encode()
	return strings.ReplaceAll(msg, ue.URL, r.Redacted())
}

// classify sorts a failure into a Kind.
func classify(err error) Kind {
	var ce *credentialError
	if errors.As(err, &ce) {
		return KindAuth
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch {
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden:
			return KindAuth
		case te.StatusCode == http.StatusNotFound:
			return KindNotFound
		case transientStatus(te.StatusCode):
			return KindTransient
		}
		for _, d := range te.Errors {
			switch d.Code {
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return KindAuth
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return KindNotFound
			}
		}
		return KindFailed
	}
	if transientNetwork(err) {
		return KindTransient
	}
	return KindFailed
}

// transientStatus reports whether a response status is worth another attempt: 429, 408 and the
// 5xx statuses except 501 Not Implemented and 505 HTTP Version Not Supported, which will not
// change. Every other 4xx is final.
func transientStatus(code int) bool {
	switch {
	case code == http.StatusTooManyRequests, code == http.StatusRequestTimeout:
		return true
	case code == http.StatusNotImplemented, code == http.StatusHTTPVersionNotSupported:
		return false
	case code >= 500 && code <= 599:
		return true
	}
	return false
}

// retryStatusCodes lists the statuses transientStatus accepts, for remote.WithRetryStatusCodes.
func retryStatusCodes() []int {
	var codes []int
	for c := 400; c <= 599; c++ {
		if transientStatus(c) {
			codes = append(codes, c)
		}
	}
	return codes
}

// transientNetwork reports whether err is a dropped connection or a timeout: the connection was
// reset or closed mid-body, or a dial or read timed out. A cancelled context is not transient.
func transientNetwork(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// retryable is the predicate for go-containerregistry's retries (remote.WithRetryPredicate): a
// response status worth another attempt, or a dropped connection. It replaces ggcr's default,
// which also retries some 4xx (a 400 BLOB_UPLOAD_INVALID, any error code "UNKNOWN").
func retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return transientStatus(te.StatusCode)
	}
	var pe *plainHTTPError
	if errors.As(err, &pe) {
		return false
	}
	return transientNetwork(err)
}

// failedURL returns the URL of the request that failed, when err says.
func failedURL(err error) *url.URL {
	var te *transport.Error
	if errors.As(err, &te) && te.Request != nil && te.Request.URL != nil {
		return te.Request.URL
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			return u
		}
	}
	return nil
}

// repositoryFromPath returns the repository of a distribution API path,
// /v2/<repository>/(manifests|blobs|tags|referrers)/..., or "".
func repositoryFromPath(p string) string {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return ""
	}
	for _, sep := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.LastIndex(rest, sep); i > 0 {
			return rest[:i]
		}
	}
	return ""
}

// credentialError is a failure to find or compute credentials: a password_env that is not set,
// a credential helper that failed, an ECR token that could not be fetched. It never holds the
// secret itself.
type credentialError struct {
	host string
	err  error
}

func (e *credentialError) Error() string {
	return fmt.Sprintf("credentials for %s: %v", e.host, e.err)
}

func (e *credentialError) Unwrap() error { return e.err }

// secrets collects every credential an operation handed out, so that errors can be scrubbed of
// them. go-containerregistry redacts URLs and the Authorization header in its debug log, but a
// registry may echo anything in an error body, and a credential helper may print anything.
type secrets struct {
	mu   sync.Mutex
	vals map[string]struct{}
}

func newSecrets() *secrets { return &secrets{vals: map[string]struct{}{}} }

// minSecretLen keeps short, guessable values (an empty password, "x") from blanking out
// unrelated words of a message.
const minSecretLen = 4

func (s *secrets) add(vals ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range vals {
		if len(v) < minSecretLen {
			continue
		}
		s.vals[v] = struct{}{}
		if q := url.QueryEscape(v); q != v {
			s.vals[q] = struct{}{}
		}
	}
}

func (s *secrets) addAuth(c *authn.AuthConfig) {
	if c == nil {
		return
	}
	s.add(c.Password, c.Auth, c.IdentityToken, c.RegistryToken)
	if c.Password != "" {
		s.add(base64.StdEncoding.EncodeToString([]byte(c.Username + ":" + c.Password)))
	}
}

// redact replaces every known secret in msg, longest first (a secret may contain another).
func (s *secrets) redact(msg string) string {
	if s == nil {
		return msg
	}
	s.mu.Lock()
	vals := make([]string, 0, len(s.vals))
	for v := range s.vals {
		vals = append(vals, v)
	}
	s.mu.Unlock()
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	for _, v := range vals {
		msg = strings.ReplaceAll(msg, v, "[redacted]")
	}
	return msg
}

// hostOf returns the registry host of a reference string without validating the rest, for
// messages about references that do not parse.
func hostOf(ref string) string {
	h, _, _ := strings.Cut(ref, "/")
	return h
}
