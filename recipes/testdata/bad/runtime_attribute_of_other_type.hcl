runtime "docker" {
  edition         = "ce"
  toolkit_version = "1.17.*"
}
