image "a" {
  from = "debian:bookworm"
}

validate "gpu" {
  target = image.a
  host {}
}
