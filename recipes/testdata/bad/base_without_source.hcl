base "debian" {
}
