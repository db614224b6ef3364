image "a" {
  from = "debian:bookworm"
  copy {
    src = "../secrets"
    dst = "etc/secrets"
  }
}
