# quickstart.hcl — a CUDA runtime image built from nothing but Debian's mirror, then checked on a GPU.
#
#   gpuforge check examples/quickstart.hcl
#   gpuforge plan  examples/quickstart.hcl
#
# Everything here comes from Debian: the base is bootstrapped with mmdebstrap from the host's
# configured apt mirror, and the CUDA runtime libraries come from Debian's non-free component.
# The image carries no kernel driver: on the GPU host the NVIDIA runtime injects the driver's
# libraries and device nodes (CDI) when the container starts.

variable "suite" {
  type        = string
  default     = "bookworm"
  description = "Debian release to bootstrap."
  validation {
    condition     = contains(["bookworm", "trixie"], var.suite)
    error_message = "The quickstart is tested on bookworm and trixie."
  }
}

variable "tag" {
  type    = string
  default = "localhost:5000/gpuforge/quickstart:latest"
}

locals {
  labels = {
    "org.opencontainers.image.title"  = "gpuforge quickstart"
    "org.opencontainers.image.source" = "https://github.com/gpuforge/gpuforge"
  }
}

base "debian" {
  bootstrap {
    distribution = "debian"
    suite        = var.suite
    variant      = "minbase"
    components   = ["main", "contrib", "non-free", "non-free-firmware"]
  }
}

image "cuda-runtime" {
  from     = base.debian
  packages = ["ca-certificates", "libcudart11.0", "python3"]
  run      = ["python3 -c 'import ctypes; ctypes.CDLL(\"libcudart.so.11.0\")'"]
  env      = { NVIDIA_VISIBLE_DEVICES = "all", NVIDIA_DRIVER_CAPABILITIES = "compute,utility" }
  labels   = local.labels
  tags     = [var.tag]
}

validate "gpu" {
  target = image.cuda-runtime
  gpus   = "all"
  nvidia_smi {
    min_driver = "535"
  }
}
