variable "token" {
  type      = string
  sensitive = true
  default   = "canary-never-in-llb-0451"
}

repository "cuda" {
  url = "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/"
  key = <<-EOT
    -----BEGIN PGP PUBLIC KEY BLOCK-----
    mQINBGJYmlEBEAC6nJmeqByeReM+MSy4palACCnfOg4pOxffrrkldxz4jrDOZNK4
    -----END PGP PUBLIC KEY BLOCK-----
  EOT
}

image "base" {
  from         = "docker.io/library/debian:bookworm"
  repositories = [repository.cuda]
  packages     = ["ca-certificates", "cuda-cudart-12-6=12.6.77-1"]
  env          = { NVIDIA_VISIBLE_DEVICES = "all" }
}

image "app" {
  from    = image.base
  workdir = "/workspace"
  copy {
    src = "train"
    dst = "/workspace/train"
  }
  secret "pip_token" {
    env = "PIP_TOKEN"
  }
  run = [
    "pip install --no-cache-dir -r /workspace/train/requirements.txt",
    "python3 -c 'print(1)'",
  ]
  user       = "1000:1000"
  entrypoint = ["python3", "train/main.py"]
  labels     = { "org.opencontainers.image.title" = "app" }
  platforms  = ["linux/amd64"]
}
