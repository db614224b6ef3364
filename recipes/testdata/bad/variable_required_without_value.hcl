variable "registry_password" {
  type      = string
  sensitive = true
}
