image "a" {
  from = "debian:bookworm"
  tags = [,]
}
