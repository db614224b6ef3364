base "ubuntu" {
  image = "ubuntu:22.04"
}

driver "nvidia" {
  branch        = "550"
  kernel_module = "open"
}

machine_image "node" {
  from           = base.ubuntu
  kernel         = "linux-aws"
  driver         = driver.nvidia
  instance_types = ["p5.48xlarge", "p3.8xlarge"]
}
