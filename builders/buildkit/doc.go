// Package buildkit owns gpuforge's use of BuildKit: connecting to a remote daemon (tcp with mTLS,
// unix, BUILDKIT_HOST) or starting a local buildkitd, lowering recipe images to immutable
// llb.State chains with source maps back to the recipe, solving every target in one session,
// progress through progressui, and exporting OCI layouts, tarballs and registry pushes.
package buildkit
