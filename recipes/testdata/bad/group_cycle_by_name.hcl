image "a" {
  from = "debian:bookworm"
}

group "g1" {
  targets = ["g2"]
}

group "g2" {
  targets = ["g1", image.a]
}
