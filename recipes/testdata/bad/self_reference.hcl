image "a" {
  from = image.a
}
