image "a" {
  from = "debian:bookworm"
