image "a" {
  name = "b"
  from = "debian:bookworm"
}
