registry "private" {
  host     = "registry.example.com"
  auth     = "basic"
  username = "ci"
  password = "hunter22"
}
