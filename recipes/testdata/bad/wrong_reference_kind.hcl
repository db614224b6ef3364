driver "nvidia" {
  branch = "550"
}

image "a" {
  from = driver.nvidia
}
