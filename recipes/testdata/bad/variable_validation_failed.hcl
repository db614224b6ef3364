variable "suite" {
  type    = string
  default = "buster"
  validation {
    condition     = contains(["bookworm", "trixie"], var.suite)
    error_message = "Only bookworm and trixie are supported."
  }
}
