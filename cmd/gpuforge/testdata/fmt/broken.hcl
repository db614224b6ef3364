# Not HCL: the block is never closed, and the attribute has no value.
image "app" {
  from     = "docker.io/library/debian:12"
  packages =
