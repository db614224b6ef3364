variable "suite" {
  type    = strin
  default = "bookworm"
}
