image "py" {
  matrix = {
    python = ["3.10", "3.11"]
  }
  name = "py"
  from = "python:${python}"
}
