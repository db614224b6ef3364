driver "nvidia" {
  branch = "550"
}

image "trainer" {
  from   = "nvcr.io/nvidia/pytorch:24.10-py3"
  driver = driver.nvidia
}
