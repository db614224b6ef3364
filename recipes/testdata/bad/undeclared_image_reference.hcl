image "trainer" {
  from = "debian:bookworm"
}

validate "gpu" {
  target = image.trainr
  nvidia_smi {}
}
