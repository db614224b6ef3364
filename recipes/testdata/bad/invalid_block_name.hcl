image "1st" {
  from = "debian:bookworm"
}
