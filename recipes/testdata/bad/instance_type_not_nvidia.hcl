base "ubuntu" {
  image = "ubuntu:24.04"
}

machine_image "node" {
  from           = base.ubuntu
  kernel         = "linux-aws"
  instance_types = ["g4ad.xlarge"]
}
