base "debian" {
  image = "docker.io/library/debian:bookworm"
}

image "app" {
  from       = base.debian
  cache_from = ["type=registry", "type=s3,bucket=x"]
  cache_to   = ["type=local,src=cache", "type=registry,ref=registry.example.com/app:cache,mode=all"]
}
