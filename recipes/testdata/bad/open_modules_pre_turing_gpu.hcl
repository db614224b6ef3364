driver "nvidia" {
  branch        = "550"
  kernel_module = "open"
  gpus          = ["Tesla V100-SXM2-16GB"]
}
