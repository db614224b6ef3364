image "a" {
  from = "debian:bookworm"
  tags = ["registry.example.com/ml/base:1"]
}

image "b" {
  from = "debian:trixie"
  tags = ["registry.example.com/ml/base:1"]
}
