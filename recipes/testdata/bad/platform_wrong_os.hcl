image "a" {
  from      = "debian:bookworm"
  platforms = ["linux/amd64", "windows/amd64"]
}
