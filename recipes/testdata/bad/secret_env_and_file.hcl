image "a" {
  from = "debian:bookworm"
  secret "ngc" {
    env  = "NGC_API_KEY"
    file = "ngc.key"
  }
}
