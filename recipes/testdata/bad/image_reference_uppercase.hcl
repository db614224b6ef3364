base "ubuntu" {
  image = "Ubuntu:24.04"
}
