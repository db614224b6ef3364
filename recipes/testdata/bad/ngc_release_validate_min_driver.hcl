framework "pytorch" {
  image = "nvcr.io/nvidia/pytorch:25.01-py3"
}

image "trainer" {
  from = framework.pytorch
}

validate "gpu" {
  target = image.trainer
  nvidia_smi {
    min_driver = "515"
  }
}
