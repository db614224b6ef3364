registry "private" {
  host = "https://registry.example.com/v2"
}
