base "debian" {
  image = "debian:bookworm"
}

machine_image "node" {
  from   = base.debian
  kernel = "linux-image-cloud-amd64"
  ami {
    name         = "node"
    regions      = ["us-east-1", "useast2"]
    deprecate_at = "next year"
  }
}
