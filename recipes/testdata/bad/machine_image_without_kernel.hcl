base "debian" {
  image = "debian:bookworm"
}

machine_image "node" {
  from = base.debian
}
