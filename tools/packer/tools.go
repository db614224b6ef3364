//go:build tools

// Package packer pins HashiCorp Packer v1.9.4 — the last release under the MPL, which still bundles
// the QEMU builder — for bench/: the side-by-side bake of the same GPU host image with Packer's
// qemu builder. It is a module of its own so that Packer's dependencies stay out of gpuforge's.
// `make bin/packer` builds it; the binary is never committed.
package packer

import _ "github.com/hashicorp/packer"
