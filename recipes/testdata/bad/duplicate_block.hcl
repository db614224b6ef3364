image "a" {
  from = "debian:bookworm"
}

image "a" {
  from = "debian:trixie"
}
