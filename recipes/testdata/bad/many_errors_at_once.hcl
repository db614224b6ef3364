variable "suite" {
  default = "bookworm"
}

image "a" {
  from     = "Debian:${var.suite}"
  packagez = ["curl"]
  tags     = ["registry.example.com/a:1"]
}

image "b" {
  from      = image.a
  platforms = ["linux/arm65"]
  tags      = ["registry.example.com/a:1"]
}

validate "gpu" {
  target = image.c
  gpus   = "all,0"
}
