image "a" {
  from = "debian:bookworm"
}

validate "gpu" {
  target = image.a
  gpus   = "0,1,0"
  nvidia_smi {}
}
