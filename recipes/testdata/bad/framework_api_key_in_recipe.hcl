framework "pytorch" {
  image   = "nvcr.io/nvidia/pytorch:24.10-py3"
  api_key = "nvapi-0123456789abcdef"
}
