package registry

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	ecrtypes "github.com/aws/aws-sdk-go-v2/service/ecr/types"
	"github.com/google/go-containerregistry/pkg/authn"
)

// ECRClient is the part of the Amazon ECR API the keychain calls; *ecr.Client implements it.
type ECRClient interface {
	GetAuthorizationToken(ctx context.Context, in *ecr.GetAuthorizationTokenInput, optFns ...func(*ecr.Options)) (*ecr.GetAuthorizationTokenOutput, error)
}

var _ ECRClient = (*ecr.Client)(nil)

// ecrHostRE matches private ECR registry hosts, <account>.dkr.ecr[-fips].<region>.amazonaws.com
// (.cn in China), and captures the region.
var ecrHostRE = regexp.MustCompile(`^[0-9]{12}\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?(?::[0-9]+)?$`)

func isECRHost(host string) bool { return ecrHostRE.MatchString(host) }

// ecrRegion returns the region named in an ECR host, or "".
func ecrRegion(host string) string {
	if m := ecrHostRE.FindStringSubmatch(host); m != nil {
		return m[1]
	}
	return ""
}

// ecrRefreshMargin is how long before its expiry a cached ECR token is replaced.
const ecrRefreshMargin = 10 * time.Minute

// ecrTokens fetches ECR authorization tokens and caches them per region until shortly before
// they expire (ECR tokens last 12 hours and are valid for every registry the principal may
// reach in the region). No ECR credential helper is involved: the AWS SDK's default credential
// chain is what the rest of gpuforge (AMI upload) uses too.
type ecrTokens struct {
	newClient func(ctx context.Context, region string) (ECRClient, error)
	now       func() time.Time

	mu    sync.Mutex
	cache map[string]ecrToken
}

type ecrToken struct {
	username, password string
	expires            time.Time
}

func newECRTokens() *ecrTokens {
	return &ecrTokens{
		newClient: defaultECRClient,
		now:       time.Now,
		cache:     map[string]ecrToken{},
	}
}

func defaultECRClient(ctx context.Context, region string) (ECRClient, error) {
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region))
	if err != nil {
		return nil, fmt.Errorf("loading AWS configuration: %w", err)
	}
	return ecr.NewFromConfig(cfg), nil
}

// auth returns basic credentials for an ECR host; region, when empty, comes from the host.
func (t *ecrTokens) auth(ctx context.Context, host, region string) (authn.Authenticator, error) {
	if region == "" {
		region = ecrRegion(host)
	}
	if region == "" {
		return nil, fmt.Errorf("%s is not an ECR host (<account>.dkr.ecr.<region>.amazonaws.com) and the registry block sets no region", host)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tok, ok := t.cache[region]; ok && t.now().Add(ecrRefreshMargin).Before(tok.expires) {
		return authn.FromConfig(authn.AuthConfig{Username: tok.username, Password: tok.password}), nil
	}
	c, err := t.newClient(ctx, region)
	if err != nil {
		return nil, err
	}
	out, err := c.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		return nil, fmt.Errorf("ecr:GetAuthorizationToken in %s: %w", region, err)
	}
	if len(out.AuthorizationData) == 0 {
		return nil, fmt.Errorf("ecr:GetAuthorizationToken in %s returned no authorization data", region)
	}
	tok, err := decodeECRToken(out.AuthorizationData[0], t.now())
	if err != nil {
		return nil, fmt.Errorf("ecr:GetAuthorizationToken in %s: %w", region, err)
	}
	t.cache[region] = tok
	return authn.FromConfig(authn.AuthConfig{Username: tok.username, Password: tok.password}), nil
}

// ecrDefaultLifetime is the lifetime of an ECR token that comes without ExpiresAt (ECR documents
// 12 hours; assume less).
const ecrDefaultLifetime = time.Hour

// decodeECRToken decodes AuthorizationData: the token is base64("AWS:<password>"). Errors never
// contain the token.
func decodeECRToken(d ecrtypes.AuthorizationData, now time.Time) (ecrToken, error) {
	if d.AuthorizationToken == nil || *d.AuthorizationToken == "" {
		return ecrToken{}, errors.New("empty authorization token")
	}
	raw, err := base64.StdEncoding.DecodeString(*d.AuthorizationToken)
	if err != nil {
		return ecrToken{}, errors.New("authorization token is not base64")
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok || user == "" || pass == "" {
		return ecrToken{}, errors.New("authorization token is not user:password")
	}
	tok := ecrToken{username: user, password: pass, expires: now.Add(ecrDefaultLifetime)}
	if d.ExpiresAt != nil {
		tok.expires = *d.ExpiresAt
	}
	return tok, nil
}
