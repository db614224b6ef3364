// Package compat answers compatibility questions that the recipe checker
// asks about GPU images, without any network access: every fact comes from
// CSV tables embedded from the data/ directory (see README.md for sources).
//
//   - NGC framework releases (PyTorch, TensorFlow): the CUDA version each
//     container ships, the minimum NVIDIA driver it needs, and the data-center
//     driver branches that can still run it through CUDA forward
//     compatibility. See LookupFramework and Framework.SupportsBranch.
//   - GPU models: architecture, compute capability, and whether NVIDIA's open
//     and proprietary kernel modules support them. See LookupGPU.
//   - AWS EC2 instance types: accelerator model, count and vendor.
//     See LookupInstanceType.
//
// The tables are parsed once, on first use. Malformed embedded data is a
// programming error and makes the first lookup panic; the package tests prove
// that the shipped data parses.
package compat
