# ngc-pytorch.hcl — a training image derived from NVIDIA's NGC PyTorch container, with a few pip
# additions and the team's code, pushed to a private registry after it passed a GPU check.
#
#   export NGC_API_KEY=…                      # from ngc.nvidia.com, for nvcr.io
#   export REGISTRY_PASSWORD=…                # for the private registry
#   gpuforge plan examples/ngc-pytorch.hcl
#
# The NGC key reaches the build only as a BuildKit secret: it is never an argument, an
# environment variable of the image or a layer.

variable "ngc_release" {
  type        = string
  default     = "24.10"
  description = "NGC PyTorch release, YY.MM."
  validation {
    condition     = can(regex("^[0-9]{2}\\.[0-9]{2}$", var.ngc_release))
    error_message = "The NGC release is written YY.MM, for example 24.10."
  }
}

variable "registry" {
  type    = string
  default = "registry.example.com"
}

variable "registry_password" {
  type        = string
  default     = ""
  sensitive   = true
  description = "Password for the private registry; leave empty to read REGISTRY_PASSWORD."
}

variable "version" {
  type    = string
  default = "0.1.0"
}

framework "pytorch" {
  image       = "nvcr.io/nvidia/pytorch:${var.ngc_release}-py3"
  api_key_env = "NGC_API_KEY"
}

registry "private" {
  host         = var.registry
  auth         = "basic"
  username     = "ci-bot"
  password     = var.registry_password
  password_env = "REGISTRY_PASSWORD"
}

image "trainer" {
  from     = framework.pytorch
  packages = ["libsndfile1"]
  run = [
    "pip install --no-cache-dir wandb==0.18.5 hydra-core==1.3.2",
    "pip install --no-cache-dir --index-url https://pypi.internal.example.com/simple/ team-utils==2.4.0",
  ]
  secret "pip_index_token" {
    env = "PIP_INDEX_TOKEN"
  }
  copy {
    src = "trainer"
    dst = "/workspace/trainer"
  }
  workdir    = "/workspace/trainer"
  entrypoint = ["python", "train.py"]
  labels = {
    "org.opencontainers.image.version" = var.version
  }
  tags = [
    "${var.registry}/ml/trainer:${var.version}",
    "${var.registry}/ml/trainer:ngc-${var.ngc_release}",
  ]
  platforms = ["linux/amd64"]
  push      = true
}

validate "trainer-gpu" {
  target = image.trainer
  gpus   = "all"
  nvidia_smi {
    min_driver = "560"
  }
  resnet50 {
    batch_size                = 256
    precision                 = "bf16"
    min_fraction_of_reference = 0.8
  }
}
