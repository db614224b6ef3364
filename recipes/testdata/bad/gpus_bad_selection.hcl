image "a" {
  from = "debian:bookworm"
}

validate "gpu" {
  target = image.a
  gpus   = "0,x"
  nvidia_smi {}
}
