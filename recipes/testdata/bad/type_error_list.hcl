image "a" {
  from     = "debian:bookworm"
  packages = "curl"
}
