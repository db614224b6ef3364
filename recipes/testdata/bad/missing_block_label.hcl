image {
  from = "debian:bookworm"
}
