framework "pytorch" {
  image = "nvcr.io/nvidia/pytorch:24.10-py3"
}

validate "gpu" {
  target = framework.pytorch
  nvidia_smi {}
}
