repository "cuda" {
  key_file = "keys/cuda.gpg"
}
