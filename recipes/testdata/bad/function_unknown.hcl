image "a" {
  from = "debian:bookworm"
  tags = [formt("registry.example.com/a:%s", "1")]
}
