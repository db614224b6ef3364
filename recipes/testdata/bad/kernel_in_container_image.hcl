image "trainer" {
  from   = "debian:bookworm"
  kernel = "linux-image-cloud-amd64"
}
