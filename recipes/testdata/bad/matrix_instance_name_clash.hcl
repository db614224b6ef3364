image "py" {
  matrix = {
    python = ["3.10", "3.11"]
  }
  name = "app-${replace(python, ".", "")}"
  from = "python:${python}"
}

image "py-slim" {
  matrix = {
    python = ["3.11", "3.12"]
  }
  name = "app-${replace(python, ".", "")}"
  from = "python:${python}-slim"
}
