locals {
  registry = "registry.example.com"
}

image "a" {
  from = "debian:bookworm"
  tags = ["${local.registy}/a:1"]
}
