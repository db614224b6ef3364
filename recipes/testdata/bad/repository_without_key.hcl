repository "cuda" {
  url = "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/"
}
