variable "gpus" {
  type    = number
  default = "four"
}
