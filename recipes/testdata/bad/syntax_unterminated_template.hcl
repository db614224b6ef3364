image "a" {
  from = "debian:${var.suite"
}
