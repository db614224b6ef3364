// Package builders groups the engines that turn a plan's stages into artifacts. Each
// subpackage implements pipeline.Step for its own stages and owns one outside system:
//
//   - buildkit: connecting to or starting buildkitd, lowering recipe targets to LLB, solving, exporting;
//   - registry: registry credentials, push, copy and inspect (go-containerregistry);
//   - disk: root filesystem to a bootable GPT disk, formats, and the QEMU boot check;
//   - ami: EBS direct snapshot upload, AMI registration, copy, share, cleanup and gc.
//
// This package itself holds no code.
package builders
