image "a" {
  from = "debian:bookworm"
  tags = [join(",", "registry.example.com/a:1")]
}
