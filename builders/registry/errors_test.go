package registry

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

func TestClassify(t *testing.T) {
	status := func(code int, codes ...transport.ErrorCode) error {
		e := &transport.Error{StatusCode: code}
		for _, c := range codes {
			e.Errors = append(e.Errors, transport.Diagnostic{Code: c})
		}
		return e
	}
	for _, tc := range []struct {
		err  error
		want Kind
	}{
		{status(401), KindAuth},
		{status(403, transport.DeniedErrorCode), KindAuth},
		{status(400, transport.UnauthorizedErrorCode), KindAuth},
		{status(404), KindNotFound},
		{status(400, transport.ManifestUnknownErrorCode), KindNotFound},
		{status(503), KindTransient},
		{status(429, transport.TooManyRequestsErrorCode), KindTransient},
		{status(400, transport.DigestInvalidErrorCode), KindFailed},
		{status(501), KindFailed},
		{&credentialError{host: "h", err: errors.New("no key")}, KindAuth},
		{fmt.Errorf("put: %w", syscall.ECONNRESET), KindTransient},
		{context.Canceled, KindFailed},
		{errors.New("anything"), KindFailed},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestNewErrorNamesRegistryAndRepository(t *testing.T) {
	dst := mustRef(t, "registry.example.com:5000/team/app:v1")
	src := mustRef(t, "source.example.com/mirror/base:1")
	req, _ := http.NewRequest(http.MethodHead, "https://source.example.com/v2/mirror/base/blobs/sha256:abc", nil)
	e := newError("copy", &transport.Error{StatusCode: 404, Request: req}, nil, dst, src)
	if e.Host != "source.example.com" || e.Repository != "mirror/base" || e.Kind != KindNotFound || e.StatusCode != 404 {
		t.Errorf("error for a request to the source: %+v", e)
	}
	if !strings.HasPrefix(e.Error(), "copy source.example.com/mirror/base: not found: HEAD https://source.example.com/v2/mirror/base/blobs/") {
		t.Errorf("message %q", e.Error())
	}
	// A request to a host that is neither (a token server) leaves the first reference's.
	req, _ = http.NewRequest(http.MethodGet, "https://auth.example.com/token?scope=x", nil)
	e = newError("push", &transport.Error{StatusCode: 401, Request: req}, nil, dst)
	if e.Host != "registry.example.com:5000" || e.Repository != "team/app" || !errors.Is(e, ErrAuth) {
		t.Errorf("error for a token server's 401: %+v", e)
	}
	// A dropped connection reported by net/http carries the URL too.
	ue := &url.Error{Op: "Patch", URL: "https://registry.example.com:5000/v2/team/app/blobs/uploads/x", Err: syscall.ECONNRESET}
	e = newError("push", ue, nil, dst)
	if e.Repository != "team/app" || !e.Temporary() || !errors.Is(e, ErrTransient) || errors.Is(e, ErrAuth) {
		t.Errorf("error for a reset: %+v", e)
	}
	if !errors.Is(e, syscall.ECONNRESET) {
		t.Errorf("the cause is not reachable with errors.Is")
	}
	// The query of a failed request's URL (a pre-signed blob URL's signature) is redacted.
	signed := &url.Error{Op: "Patch", URL: "https://blobs.example.com/upload/1?X-Amz-Signature=canary-sig&digest=sha256%3Aabc", Err: syscall.ECONNRESET}
	e = newError("push", signed, nil, dst)
	if strings.Contains(e.Error(), "canary-sig") || !strings.Contains(e.Error(), "X-Amz-Signature=REDACTED") || !strings.Contains(e.Error(), "digest=sha256") {
		t.Errorf("message %q: want the signature redacted and the digest kept", e.Error())
	}
	// An *Error is not wrapped twice.
	if again := newError("copy", fmt.Errorf("outer: %w", e), nil, src); again != e {
		t.Errorf("newError wrapped an *Error again")
	}
}

func TestRepositoryFromPath(t *testing.T) {
	for p, want := range map[string]string{
		"/v2/a/b/c/manifests/v1":          "a/b/c",
		"/v2/a/blobs/sha256:x":            "a",
		"/v2/a/b/blobs/uploads/uuid":      "a/b",
		"/v2/a/tags/list":                 "a",
		"/v2/a/referrers/sha256:x":        "a",
		"/v2/":                            "",
		"/token":                          "",
		"/v2/manifests/x/manifests/v1":    "manifests/x",
		"/v2/team/blobs/x/blobs/sha256:1": "team/blobs/x",
	} {
		if got := repositoryFromPath(p); got != want {
			t.Errorf("repositoryFromPath(%q) = %q, want %q", p, got, want)
		}
	}
}

// TestErrorRedactsCredentials: every credential handed out through the recording keychain is
// scrubbed from error messages, in every encoding a message could carry it.
func TestErrorRedactsCredentials(t *testing.T) {
	const user, pw = "robot", "canary-s3cret/+=value"
	s := newSecrets()
	kc := recordingKeychain{inner: staticKeychain{authn.FromConfig(authn.AuthConfig{Username: user, Password: pw, IdentityToken: "canary-identity-token"})}, s: s}
	a, err := kc.Resolve(mustRef(t, "registry.example.com/a:b").Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authn.Authorization(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + pw))
	cause := fmt.Errorf("registry said: bad password %s (header Basic %s, query %s) and token canary-identity-token",
		pw, basic, url.QueryEscape(pw))
	e := newError("push", cause, s, mustRef(t, "registry.example.com/a:b"))
	for _, leak := range []string{pw, basic, url.QueryEscape(pw), "canary-identity-token"} {
		if strings.Contains(e.Error(), leak) {
			t.Errorf("message leaks %q: %s", leak, e.Error())
		}
	}
	if !strings.Contains(e.Error(), "[redacted]") || !strings.Contains(e.Error(), "registry.example.com/a") {
		t.Errorf("message %q", e.Error())
	}

	// Anonymous stays anonymous: go-containerregistry compares with it.
	kc = recordingKeychain{inner: staticKeychain{authn.Anonymous}, s: s}
	if a, _ := kc.Resolve(mustRef(t, "r.example.com/a").Context()); a != authn.Anonymous {
		t.Errorf("recordingKeychain wrapped authn.Anonymous")
	}
}

type staticKeychain struct{ a authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.a, nil }
