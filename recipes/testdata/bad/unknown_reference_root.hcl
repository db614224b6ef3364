image "a" {
  from = "debian:bookworm"
}

validate "gpu" {
  target = imag.a
  nvidia_smi {}
}
