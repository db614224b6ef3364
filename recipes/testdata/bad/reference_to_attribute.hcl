base "debian" {
  image = "debian:bookworm"
}

image "a" {
  from = base.debian.image
}
