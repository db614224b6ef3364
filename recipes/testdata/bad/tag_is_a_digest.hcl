image "a" {
  from = "debian:bookworm"
  tags = ["registry.example.com/a@sha256:0123456789012345678901234567890123456789012345678901234567890123"]
}
