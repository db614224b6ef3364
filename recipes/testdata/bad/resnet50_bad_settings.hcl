image "a" {
  from = "debian:bookworm"
}

validate "gpu" {
  target = image.a
  resnet50 {
    precision                 = "int8"
    min_fraction_of_reference = 80
  }
}
