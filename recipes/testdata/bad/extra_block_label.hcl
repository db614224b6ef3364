image "a" "b" {
  from = "debian:bookworm"
}
