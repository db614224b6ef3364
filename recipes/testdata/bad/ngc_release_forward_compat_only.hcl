base "ubuntu" {
  image = "ubuntu:22.04"
}

driver "nvidia" {
  branch = "535"
}

runtime "docker" {}

framework "pytorch" {
  image = "nvcr.io/nvidia/pytorch:24.10-py3"
}

machine_image "node" {
  from     = base.ubuntu
  kernel   = "linux-aws"
  driver   = driver.nvidia
  runtimes = [runtime.docker]
  preload  = [framework.pytorch]
}
