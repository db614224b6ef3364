base "debian" {
  bootstrap {
    suite   = "bookworm"
    variant = "minimal"
  }
}
