image "py" {
  matrix = {
    python = "3.10"
  }
  name = "py-${python}"
  from = "python:3.10"
}
