base "debian" {
  image = "debian:bookworm"
}

machine_image "node" {
  from   = base.debian
  kernel = "linux-image-cloud-amd64"
  ami {
    name = "node"
    volume {
      size = "lots"
    }
  }
}
