// Package testenv owns the real programs that gpuforge's tests run against,
// and how tests find them.
//
// `make setup` builds the daemons and clients pinned in tools/go.mod
// (buildkitd, buildctl and the CNCF distribution registry) into bin/ at the
// repository root. This package locates the repository root (RepoRoot),
// finds those programs (Tool) and reads the versions pinned for them
// (PinnedVersion). Starting the daemons for a test — a buildkitd with the OCI
// worker under a temporary root, a registry on a loopback port with htpasswd
// auth and TLS, each stopped by t.Cleanup — belongs here too (StartBuildkitd,
// StartRegistry, added by later issues), as do shared fixtures.
//
// A test that needs a program calls Tool. When the program is missing the test
// is skipped, so `go test ./...` runs anywhere; under `make test`, which sets
// GPUFORGE_REQUIRE_TOOLS=1, a missing program fails the test instead and says
// to run `make setup`.
package testenv
