imge "a" {
  from = "debian:bookworm"
}
