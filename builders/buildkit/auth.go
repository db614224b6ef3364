package buildkit

import (
	"context"

	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/session/auth/authprovider"
)

// authFromKeychain lets BuildKit pull with the same credentials gpuforge pushes with: it answers
// the daemon's credential requests from a go-containerregistry keychain (docker config and
// helpers, NGC, ECR and the recipe's registry blocks). BuildKit's own provider reads only a
// docker config file, hence this adapter.
func authFromKeychain(kc authn.Keychain) authprovider.AuthConfigProvider {
	return func(ctx context.Context, host string, _ []string, _ authprovider.ExpireCachedAuthCheck) (types.AuthConfig, error) {
		if host == authprovider.DockerHubRegistryHost {
			host = name.DefaultRegistry
		}
		reg, err := name.NewRegistry(host)
		if err != nil {
			return types.AuthConfig{}, nil // not a registry host we can name: anonymous
		}
		a, err := authn.Resolve(ctx, kc, reg)
		if err != nil {
			return types.AuthConfig{}, err
		}
		cfg, err := authn.Authorization(ctx, a)
		if err != nil {
			return types.AuthConfig{}, err
		}
		return types.AuthConfig{
			Username: cfg.Username, Password: cfg.Password, Auth: cfg.Auth,
			IdentityToken: cfg.IdentityToken, RegistryToken: cfg.RegistryToken, ServerAddress: host,
		}, nil
	}
}
