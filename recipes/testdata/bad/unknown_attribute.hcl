image "a" {
  from = "debian:bookworm"
  tagz = ["registry.example.com/a:1"]
}
