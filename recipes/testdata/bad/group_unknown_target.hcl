image "a" {
  from = "debian:bookworm"
}

group "default" {
  targets = ["a", "b"]
}
