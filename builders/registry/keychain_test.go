package registry

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	ecrtypes "github.com/aws/aws-sdk-go-v2/service/ecr/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/gpuforge/gpuforge/recipes"
)

func resolve(t *testing.T, kc authn.Keychain, host string) (*authn.AuthConfig, error) {
	t.Helper()
	reg, err := name.NewRegistry(host)
	if err != nil {
		t.Fatal(err)
	}
	a, err := authn.Resolve(context.Background(), kc, reg)
	if err != nil {
		return nil, err
	}
	return authn.Authorization(context.Background(), a)
}

func envOf(m map[string]string) KeychainOption {
	return WithLookupEnv(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
}

// fakeECR returns a fixed token and counts calls.
type fakeECR struct {
	token   string
	expires time.Time
	err     error
	calls   int
	regions []string
}

func (f *fakeECR) factory(_ context.Context, region string) (ECRClient, error) {
	f.regions = append(f.regions, region)
	return f, nil
}

func (f *fakeECR) GetAuthorizationToken(context.Context, *ecr.GetAuthorizationTokenInput, ...func(*ecr.Options)) (*ecr.GetAuthorizationTokenOutput, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	return &ecr.GetAuthorizationTokenOutput{AuthorizationData: []ecrtypes.AuthorizationData{{
		AuthorizationToken: aws.String(f.token),
		ExpiresAt:          aws.Time(f.expires),
		ProxyEndpoint:      aws.String("https://123456789012.dkr.ecr.us-east-1.amazonaws.com"),
	}}}, nil
}

// dockerConfig writes a docker config.json with auths for host and returns a keychain
// reading it (authn.DefaultKeychain with DOCKER_CONFIG and HOME pointing at it).
func dockerConfig(t *testing.T, auths map[string][2]string) authn.Keychain {
	t.Helper()
	dir := t.TempDir()
	var entries []string
	for host, up := range auths {
		enc := base64.StdEncoding.EncodeToString([]byte(up[0] + ":" + up[1]))
		entries = append(entries, `"`+host+`": {"auth": "`+enc+`"}`)
	}
	cfg := `{"auths": {` + strings.Join(entries, ",") + `}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", t.TempDir())
	t.Setenv("DOCKER_CONFIG", dir)
	return authn.DefaultKeychain
}

func TestKeychainBlocks(t *testing.T) {
	docker := dockerConfig(t, map[string][2]string{
		"registry.example.com": {"docker-user", "docker-pass"},
		"nvcr.io":              {"$oauthtoken", "docker-ngc-key"},
	})
	helperDir := t.TempDir()
	helper := "#!/bin/sh\nread host\nif [ \"$1\" = get ] && [ \"$host\" = helped.example.com ]; then\n" +
		"  echo '{\"ServerURL\":\"helped.example.com\",\"Username\":\"helper-user\",\"Secret\":\"helper-secret\"}'\nelse\n" +
		"  echo 'credentials not found in native keychain'; exit 1\nfi\n"
	if err := os.WriteFile(filepath.Join(helperDir, "docker-credential-gpuforgetest"), []byte(helper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", helperDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	fake := &fakeECR{token: base64.StdEncoding.EncodeToString([]byte("AWS:ecr-password")), expires: time.Now().Add(12 * time.Hour)}

	blocks := []*recipes.Registry{
		{Name: "basic", Host: "basic.example.com", Auth: AuthBasic, Username: "u", Password: "p-inline"},
		{Name: "basicenv", Host: "basicenv.example.com:5000", Auth: AuthBasic, Username: "u", PasswordEnv: "REG_PW"},
		{Name: "docker", Host: "registry.example.com", Auth: AuthDocker},
		{Name: "ngc", Host: "nvcr.io", Auth: AuthNGC, PasswordEnv: "MY_NGC"},
		{Name: "helper", Host: "helped.example.com", Auth: AuthHelper, CredentialHelper: "gpuforgetest"},
		{Name: "ecr", Host: "123456789012.dkr.ecr.eu-west-1.amazonaws.com", Auth: AuthECR},
		{Name: "ecr-region", Host: "ecr-proxy.example.com", Auth: AuthECR, Region: "ap-south-1"},
		{Name: "hub", Host: "docker.io", Auth: AuthBasic, Username: "hubuser", Password: "hubpass"},
	}
	kc := NewKeychain(blocks, WithDockerKeychain(docker),
		envOf(map[string]string{"REG_PW": "p-env", "MY_NGC": "ngc-from-block-env", "NGC_API_KEY": "ngc-default"}),
		WithECRClient(fake.factory))

	for _, tc := range []struct{ host, user, pass string }{
		{"basic.example.com", "u", "p-inline"},
		{"basicenv.example.com:5000", "u", "p-env"},
		{"registry.example.com", "docker-user", "docker-pass"},
		{"nvcr.io", NGCUsername, "ngc-from-block-env"},
		{"helped.example.com", "helper-user", "helper-secret"},
		{"123456789012.dkr.ecr.eu-west-1.amazonaws.com", "AWS", "ecr-password"},
		{"ecr-proxy.example.com", "AWS", "ecr-password"},
		{"index.docker.io", "hubuser", "hubpass"},
	} {
		cfg, err := resolve(t, kc, tc.host)
		if err != nil {
			t.Errorf("%s: %v", tc.host, err)
			continue
		}
		if cfg.Username != tc.user || cfg.Password != tc.pass {
			t.Errorf("%s: got %q/%q, want %q/%q", tc.host, cfg.Username, cfg.Password, tc.user, tc.pass)
		}
	}
	if strings.Join(fake.regions, ",") != "eu-west-1,ap-south-1" {
		t.Errorf("ECR clients made for regions %v, want eu-west-1 then ap-south-1", fake.regions)
	}
	// The token is cached per region.
	if _, err := resolve(t, kc, "123456789012.dkr.ecr.eu-west-1.amazonaws.com"); err != nil || fake.calls != 2 {
		t.Errorf("second ECR resolve: err %v, %d calls; want the cached token (2 calls in all)", err, fake.calls)
	}
}

func TestKeychainWithoutBlocks(t *testing.T) {
	docker := dockerConfig(t, map[string][2]string{
		"registry.example.com":                         {"docker-user", "docker-pass"},
		"111111111111.dkr.ecr.us-east-1.amazonaws.com": {"AWS", "from-docker-config"},
	})
	fake := &fakeECR{token: base64.StdEncoding.EncodeToString([]byte("AWS:ecr-password")), expires: time.Now().Add(time.Hour)}
	kc := NewKeychain(nil, WithDockerKeychain(docker), envOf(map[string]string{"NGC_API_KEY": "ngc-key"}), WithECRClient(fake.factory))
	for _, tc := range []struct{ host, user, pass string }{
		{"nvcr.io", NGCUsername, "ngc-key"},
		{"registry.example.com", "docker-user", "docker-pass"},
		{"111111111111.dkr.ecr.us-east-1.amazonaws.com", "AWS", "from-docker-config"},
		{"222222222222.dkr.ecr.us-west-2.amazonaws.com", "AWS", "ecr-password"},
		{"other.example.com", "", ""},
	} {
		cfg, err := resolve(t, kc, tc.host)
		if err != nil {
			t.Errorf("%s: %v", tc.host, err)
			continue
		}
		if cfg.Username != tc.user || cfg.Password != tc.pass {
			t.Errorf("%s: got %q/%q, want %q/%q", tc.host, cfg.Username, cfg.Password, tc.user, tc.pass)
		}
	}
	if strings.Join(fake.regions, ",") != "us-west-2" {
		t.Errorf("ECR called for %v, want only us-west-2 (the other host has docker credentials)", fake.regions)
	}
	// Without NGC_API_KEY, nvcr.io falls back to docker's config.
	docker = dockerConfig(t, map[string][2]string{"nvcr.io": {"$oauthtoken", "docker-ngc"}})
	kc = NewKeychain(nil, WithDockerKeychain(docker), envOf(nil))
	if cfg, err := resolve(t, kc, "nvcr.io"); err != nil || cfg.Password != "docker-ngc" {
		t.Errorf("nvcr.io without NGC_API_KEY: %v %+v", err, cfg)
	}
	// WithNGCKeyEnv names another variable.
	kc = NewKeychain(nil, WithDockerKeychain(docker), envOf(map[string]string{"CI_NGC": "ci-key"}), WithNGCKeyEnv("CI_NGC"))
	if cfg, err := resolve(t, kc, "nvcr.io"); err != nil || cfg.Password != "ci-key" {
		t.Errorf("nvcr.io with WithNGCKeyEnv: %v %+v", err, cfg)
	}
}

// TestKeychainErrors: configured credentials that cannot be found fail with an error naming
// the host and the reason, never a secret, and classified as an auth error.
func TestKeychainErrors(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	fake := &fakeECR{err: errors.New("AccessDeniedException: not authorized")}
	blocks := []*recipes.Registry{
		{Name: "basicenv", Host: "a.example.com", Auth: AuthBasic, Username: "u", PasswordEnv: "UNSET_PW"},
		{Name: "ngc", Host: "nvcr.io", Auth: AuthNGC},
		{Name: "helper", Host: "b.example.com", Auth: AuthHelper, CredentialHelper: "missing"},
		{Name: "ecr", Host: "123456789012.dkr.ecr.us-east-1.amazonaws.com", Auth: AuthECR},
		{Name: "ecr-noregion", Host: "c.example.com", Auth: AuthECR},
		{Name: "odd", Host: "d.example.com", Auth: "kerberos"},
	}
	kc := NewKeychain(blocks, WithDockerKeychain(anonymousKeychain{}), envOf(nil), WithECRClient(fake.factory))
	for host, want := range map[string]string{
		"a.example.com": "UNSET_PW is not set",
		"nvcr.io":       "NGC_API_KEY is not set",
		"b.example.com": "docker-credential-missing",
		"123456789012.dkr.ecr.us-east-1.amazonaws.com": "AccessDeniedException",
		"c.example.com": "sets no region",
		"d.example.com": `unknown auth "kerberos"`,
	} {
		_, err := resolve(t, kc, host)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), host) {
			t.Errorf("%s: err = %v, want one naming the host and containing %q", host, err, want)
		}
		if classify(err) != KindAuth {
			t.Errorf("%s: classified %v, want auth", host, classify(err))
		}
	}
}

func TestDecodeECRToken(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	exp := now.Add(12 * time.Hour)
	tok := func(s string) *string { return &s }
	enc := func(s string) *string { return tok(base64.StdEncoding.EncodeToString([]byte(s))) }

	got, err := decodeECRToken(ecrtypes.AuthorizationData{AuthorizationToken: enc("AWS:pass:with:colons"), ExpiresAt: &exp}, now)
	if err != nil || got.username != "AWS" || got.password != "pass:with:colons" || !got.expires.Equal(exp) {
		t.Errorf("decode = %+v, %v", got, err)
	}
	got, err = decodeECRToken(ecrtypes.AuthorizationData{AuthorizationToken: enc("AWS:p")}, now)
	if err != nil || !got.expires.Equal(now.Add(ecrDefaultLifetime)) {
		t.Errorf("without ExpiresAt: %+v, %v", got, err)
	}
	const secret = "canary-ecr-secret"
	for _, bad := range []*string{nil, tok(""), tok("%%%not-base64" + secret), enc("no-colon-" + secret), enc(":" + secret), enc("AWS:")} {
		_, err := decodeECRToken(ecrtypes.AuthorizationData{AuthorizationToken: bad}, now)
		if err == nil {
			t.Errorf("decode(%v): no error", bad)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q contains the token", err)
		}
	}
}

func TestECRHost(t *testing.T) {
	for host, region := range map[string]string{
		"123456789012.dkr.ecr.us-east-1.amazonaws.com":          "us-east-1",
		"123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com": "us-gov-west-1",
		"123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn":      "cn-north-1",
		"123456789012.dkr.ecr.eu-west-1.amazonaws.com:443":      "eu-west-1",
		"public.ecr.aws":                                            "",
		"12345.dkr.ecr.us-east-1.amazonaws.com":                     "",
		"123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example": "",
	} {
		if got := ecrRegion(host); got != region || isECRHost(host) != (region != "") {
			t.Errorf("ecrRegion(%s) = %q, want %q", host, got, region)
		}
	}
}
