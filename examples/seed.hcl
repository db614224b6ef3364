# seed.hcl — the classic manual how-to that gpuforge grew out of, step for step, as one recipe.
#
# The how-to, on a 4×P100 host:
#   1. install the NVIDIA driver (384 for CUDA 9.0)             -> driver "nvidia-384"
#   2. install docker-ce from Docker's repository                -> runtime "docker-ce"
#   3. install nvidia-docker                                      -> runtime "nvidia-docker" (legacy mode)
#   4. check `nvidia-smi` inside nvidia/cuda                      -> validate "seed-nvidia-smi"
#   5. split the GPUs with NV_GPU=0,1                             -> gpus = "0,1"
#   6. pull nvcr.io/nvidia/tensorflow:17.12                       -> framework "tensorflow-1712", preloaded
#   7. run the ResNet-50 benchmark with -b 64 -g 4 (≈820 img/s)   -> validate "seed-resnet50"
#
#   gpuforge plan examples/seed.hcl
#   gpuforge plan -t seed examples/seed.hcl     # the host and both checks

variable "seed_gpus" {
  type        = string
  default     = "0,1"
  description = "The GPUs the nvidia-smi check may use, as NV_GPU=0,1 selected them."
}

base "ubuntu-xenial" {
  image = "docker.io/library/ubuntu:16.04"
}

# Step 1. Pascal GPUs (P100) need the proprietary kernel modules: the open ones start at Turing.
driver "nvidia-384" {
  branch        = "384"
  kernel_module = "proprietary"
  source        = "nvidia"
  gpus          = ["P100"]
}

# Step 2.
runtime "docker-ce" {
  type    = "docker"
  edition = "ce"
}

# Step 3. nvidia-docker 2 registered the "nvidia" runtime with docker: the legacy mode.
runtime "nvidia-docker" {
  type            = "nvidia"
  mode            = "legacy"
  default_runtime = true
}

# Step 6.
framework "tensorflow-1712" {
  image = "nvcr.io/nvidia/tensorflow:17.12"
}

machine_image "seed-host" {
  from     = base.ubuntu-xenial
  kernel   = "linux-generic"
  driver   = driver.nvidia-384
  runtimes = [runtime.docker-ce, runtime.nvidia-docker]
  preload  = [framework.tensorflow-1712]
  disk {
    formats = ["qcow2"]
  }
}

# Step 4: the image the how-to ran nvidia-smi in.
image "seed-cuda" {
  from = "docker.io/nvidia/cuda:9.0-base"
}

# The framework image the benchmark ran in.
image "seed-tensorflow" {
  from = framework.tensorflow-1712
}

# Steps 4 and 5.
validate "seed-nvidia-smi" {
  target = image.seed-cuda
  gpus   = var.seed_gpus
  nvidia_smi {
    expect_count = 2
    min_driver   = "384"
  }
}

# Step 7: ResNet-50, batch 64 per GPU, on all four GPUs.
validate "seed-resnet50" {
  target = image.seed-tensorflow
  gpus   = "0,1,2,3"
  nvidia_smi {
    expect_count = 4
    expect_model = "P100"
    min_driver   = "384"
  }
  resnet50 {
    batch_size = 64
    precision  = "fp32"
  }
}

group "seed" {
  targets = [machine_image.seed-host, validate.seed-nvidia-smi, validate.seed-resnet50]
}
