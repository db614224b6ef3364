package registry

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/docker/docker-credential-helpers/client"
	"github.com/docker/docker-credential-helpers/credentials"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/gpuforge/gpuforge/recipes"
)

// Auth methods of a recipe's registry block (recipes.Registry.Auth).
const (
	AuthDocker = "docker" // docker config.json and its credential helpers (the default)
	AuthBasic  = "basic"  // username and password (or password_env)
	AuthHelper = "helper" // one docker-credential-<credential_helper> program
	AuthNGC    = "ngc"    // NVIDIA NGC: user $oauthtoken, password an NGC API key
	AuthECR    = "ecr"    // Amazon ECR: a token from ecr:GetAuthorizationToken
)

// NGC is the host of NVIDIA's NGC registry, and NGCUsername the user name NGC API keys go with.
const (
	NGCHost     = "nvcr.io"
	NGCUsername = "$oauthtoken"
	// DefaultNGCKeyEnv is the environment variable that holds an NGC API key.
	DefaultNGCKeyEnv = "NGC_API_KEY"
)

// Keychain finds credentials for a registry host. For a host that has a recipe registry block
// it does what the block's auth says; for any other host it uses, in order: for nvcr.io, an NGC
// API key from $NGC_API_KEY when set; docker's config.json and credential helpers
// (authn.DefaultKeychain); for an ECR host (<account>.dkr.ecr.<region>.amazonaws.com), a token
// from ECR with the AWS SDK's default credential chain; else anonymous access.
//
// Keychain implements authn.Keychain and authn.ContextKeychain. A failure to find credentials
// the configuration asks for (an unset password_env, a failing helper) is an error that names
// the host and never contains a secret.
type Keychain struct {
	blocks   map[string]*recipes.Registry
	fallback authn.Keychain
	ngcEnv   string
	lookup   func(string) (string, bool)
	ecr      *ecrTokens
}

var (
	_ authn.Keychain        = (*Keychain)(nil)
	_ authn.ContextKeychain = (*Keychain)(nil)
)

// KeychainOption configures NewKeychain.
type KeychainOption func(*Keychain)

// WithDockerKeychain sets the keychain used for auth = "docker" and for hosts without a block.
//
// The default is authn.DefaultKeychain: $DOCKER_CONFIG/config.json or ~/.docker/config.json,
// with its credsStore and credHelpers, then podman's auth.json.
func WithDockerKeychain(k authn.Keychain) KeychainOption {
	return func(kc *Keychain) { kc.fallback = k }
}

// WithNGCKeyEnv names the environment variable that holds the NGC API key for nvcr.io when no
// registry block says otherwise (a block's password_env wins).
//
// The default is NGC_API_KEY.
func WithNGCKeyEnv(name string) KeychainOption {
	return func(kc *Keychain) { kc.ngcEnv = name }
}

// WithLookupEnv sets how environment variables (password_env, the NGC key) are read.
//
// The default is os.LookupEnv.
func WithLookupEnv(lookup func(string) (string, bool)) KeychainOption {
	return func(kc *Keychain) { kc.lookup = lookup }
}

// WithECRClient sets how the ECR client for a region is made.
//
// The default loads the AWS SDK's default configuration (environment, shared config and
// credentials files, SSO, web identity, ECS and EC2 instance roles) for the region.
func WithECRClient(newClient func(ctx context.Context, region string) (ECRClient, error)) KeychainOption {
	return func(kc *Keychain) { kc.ecr.newClient = newClient }
}

// NewKeychain returns a keychain for the recipe's registry blocks regs (nil for none). A block's
// host is matched against the registry host of a reference exactly, port included; docker.io
// and index.docker.io are the same host.
func NewKeychain(regs []*recipes.Registry, opts ...KeychainOption) *Keychain {
	kc := &Keychain{
		blocks:   map[string]*recipes.Registry{},
		fallback: authn.DefaultKeychain,
		ngcEnv:   DefaultNGCKeyEnv,
		lookup:   os.LookupEnv,
		ecr:      newECRTokens(),
	}
	for _, r := range regs {
		if r == nil {
			continue
		}
		kc.blocks[canonicalHost(r.Host)] = r
	}
	for _, o := range opts {
		o(kc)
	}
	return kc
}

// canonicalHost spells a registry host the way go-containerregistry does (docker.io is
// index.docker.io).
func canonicalHost(host string) string {
	if r, err := name.NewRegistry(host); err == nil {
		return r.RegistryStr()
	}
	return host
}

// Resolve implements authn.Keychain.
func (k *Keychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), target)
}

// ResolveContext implements authn.ContextKeychain.
func (k *Keychain) ResolveContext(ctx context.Context, target authn.Resource) (authn.Authenticator, error) {
	host := target.RegistryStr()
	if b := k.blocks[host]; b != nil {
		a, err := k.fromBlock(ctx, b, target)
		if err != nil {
			return nil, &credentialError{host: host, err: err}
		}
		return a, nil
	}
	switch {
	case host == NGCHost:
		if key, ok := k.lookup(k.ngcEnv); ok && key != "" {
			return ngcAuth(key), nil
		}
	case isECRHost(host):
		a, err := authn.Resolve(ctx, k.fallback, target)
		if err != nil {
			return nil, &credentialError{host: host, err: err}
		}
		if a != authn.Anonymous {
			return a, nil
		}
		a, err = k.ecr.auth(ctx, host, "")
		if err != nil {
			return nil, &credentialError{host: host, err: err}
		}
		return a, nil
	}
	a, err := authn.Resolve(ctx, k.fallback, target)
	if err != nil {
		return nil, &credentialError{host: host, err: err}
	}
	return a, nil
}

func (k *Keychain) fromBlock(ctx context.Context, b *recipes.Registry, target authn.Resource) (authn.Authenticator, error) {
	switch b.Auth {
	case "", AuthDocker:
		return authn.Resolve(ctx, k.fallback, target)
	case AuthBasic:
		pw, err := k.password(b, "")
		if err != nil {
			return nil, err
		}
		if b.Username == "" {
			return nil, fmt.Errorf("registry %q: auth = %q needs a username", b.Name, AuthBasic)
		}
		return authn.FromConfig(authn.AuthConfig{Username: b.Username, Password: pw}), nil
	case AuthNGC:
		key, err := k.password(b, k.ngcEnv)
		if err != nil {
			return nil, err
		}
		return ngcAuth(key), nil
	case AuthHelper:
		if b.CredentialHelper == "" {
			return nil, fmt.Errorf("registry %q: auth = %q needs credential_helper", b.Name, AuthHelper)
		}
		return helperAuth(ctx, b.CredentialHelper, target.RegistryStr())
	case AuthECR:
		return k.ecr.auth(ctx, target.RegistryStr(), b.Region)
	default:
		return nil, fmt.Errorf("registry %q: unknown auth %q (want docker, basic, helper, ngc or ecr)", b.Name, b.Auth)
	}
}

// password returns the block's password, else the value of its password_env, else that of
// defaultEnv when given.
func (k *Keychain) password(b *recipes.Registry, defaultEnv string) (string, error) {
	if b.Password != "" {
		return b.Password, nil
	}
	env := b.PasswordEnv
	if env == "" {
		env = defaultEnv
	}
	if env == "" {
		return "", fmt.Errorf("registry %q: no password and no password_env", b.Name)
	}
	v, ok := k.lookup(env)
	if !ok || v == "" {
		return "", fmt.Errorf("registry %q: environment variable %s is not set", b.Name, env)
	}
	return v, nil
}

func ngcAuth(key string) authn.Authenticator {
	return authn.FromConfig(authn.AuthConfig{Username: NGCUsername, Password: key})
}

// helperAuth runs docker-credential-<helper> get for host. go-containerregistry's
// authn.NewKeychainFromHelper turns every helper failure into anonymous access, which hides a
// misconfigured helper behind a later 401; a registry block that names a helper wants the failure.
func helperAuth(ctx context.Context, helper, host string) (authn.Authenticator, error) {
	prog := "docker-credential-" + helper
	creds, err := client.Get(func(args ...string) client.Program {
		return &helperProgram{cmd: exec.CommandContext(ctx, prog, args...)}
	}, host)
	if err != nil {
		if credentials.IsErrCredentialsNotFound(err) {
			return nil, fmt.Errorf("%s has no credentials for %s", prog, host)
		}
		return nil, fmt.Errorf("%s get: %w", prog, err)
	}
	// The credential helper protocol marks an identity token with the user name "<token>".
	if creds.Username == "<token>" {
		return authn.FromConfig(authn.AuthConfig{IdentityToken: creds.Secret}), nil
	}
	return authn.FromConfig(authn.AuthConfig{Username: creds.Username, Password: creds.Secret}), nil
}

// helperProgram is client.Program on an exec.Cmd made with a context, which
// client.NewShellProgramFunc does not take. The helper's stderr is kept out of gpuforge's output
// (exec.Cmd.Output collects it into the exit error, which client.Get does not print).
type helperProgram struct{ cmd *exec.Cmd }

func (p *helperProgram) Output() ([]byte, error) { return p.cmd.Output() }

func (p *helperProgram) Input(in io.Reader) { p.cmd.Stdin = in }

// recordingKeychain hands out authenticators that record the credentials they produce, so that
// an operation's errors can be scrubbed of them.
type recordingKeychain struct {
	inner authn.Keychain
	s     *secrets
}

func (k recordingKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), target)
}

func (k recordingKeychain) ResolveContext(ctx context.Context, target authn.Resource) (authn.Authenticator, error) {
	a, err := authn.Resolve(ctx, k.inner, target)
	if err != nil {
		return nil, err
	}
	// go-containerregistry compares with authn.Anonymous to skip sending credentials.
	if a == authn.Anonymous {
		return a, nil
	}
	return recordingAuth{inner: a, s: k.s}, nil
}

type recordingAuth struct {
	inner authn.Authenticator
	s     *secrets
}

func (a recordingAuth) Authorization() (*authn.AuthConfig, error) {
	return a.AuthorizationContext(context.Background())
}

func (a recordingAuth) AuthorizationContext(ctx context.Context) (*authn.AuthConfig, error) {
	c, err := authn.Authorization(ctx, a.inner)
	a.s.addAuth(c)
	return c, err
}
