image "a" {
  from = "debian@sha256:1234"
}
