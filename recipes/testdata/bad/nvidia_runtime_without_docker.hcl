base "ubuntu" {
  image = "ubuntu:24.04"
}

runtime "nvidia" {
  mode = "cdi"
}

driver "nvidia" {
  branch = "570"
}

machine_image "node" {
  from     = base.ubuntu
  kernel   = "linux-aws"
  driver   = driver.nvidia
  runtimes = [runtime.nvidia]
}
