image "a" { from = "debian:bookworm"
  tags = ["x/y:1"] }
