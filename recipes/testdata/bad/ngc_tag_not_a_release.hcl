framework "pytorch" {
  image = "nvcr.io/nvidia/pytorch:latest"
}
