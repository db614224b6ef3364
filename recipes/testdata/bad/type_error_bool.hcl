image "a" {
  from = "debian:bookworm"
  push = "yes please"
}
