image "a" {
  from      = "debian:bookworm"
  platforms = ["linux/x86"]
}
