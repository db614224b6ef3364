locals {
  suite = "bookworm"
}

locals {
  suite = "trixie"
}
