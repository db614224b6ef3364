# A valid recipe, written carelessly: fmt must align, indent and space it.
variable "suite" {
type = string
    default="bookworm"
}

base "debian" {
  bootstrap {
        suite = var.suite
    variant    =    "minbase"
  }
}

image "app" {
  from = base.debian
  packages = [ "ca-certificates","python3" ]
  env = {
    A = "1"
    LONGER_NAME = "2"
  }
  tags = ["localhost:5000/app:latest"]
}
