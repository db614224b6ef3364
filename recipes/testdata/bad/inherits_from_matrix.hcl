image "py" {
  matrix = {
    python = ["3.10", "3.11"]
  }
  name = "py-${replace(python, ".", "")}"
  from = "python:${python}"
}

image "app" {
  inherits = [image.py]
}
