//go:build tools

// Package tools pins the daemons and clients that the tests run for real.
// `make setup` builds them into bin/ from this module, so their versions are
// the ones in this go.mod and nothing else. `go install pkg@version` cannot be
// used for BuildKit because its go.mod has exclude directives.
package tools

import (
	_ "github.com/distribution/distribution/v3/cmd/registry"
	_ "github.com/google/go-containerregistry/cmd/crane"
	_ "github.com/moby/buildkit/cmd/buildctl"
	_ "github.com/moby/buildkit/cmd/buildkitd"
)
