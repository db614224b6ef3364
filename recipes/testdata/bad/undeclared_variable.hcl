variable "version" {
  default = "1.0"
}

image "a" {
  from = "debian:bookworm"
  tags = ["registry.example.com/a:${var.verison}"]
}
