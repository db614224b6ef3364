registry "private" {
  host = "registry.example.com"
  auth = "basic"
}
