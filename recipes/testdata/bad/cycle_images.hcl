image "a" {
  from = image.b
}

image "b" {
  from = image.a
}
