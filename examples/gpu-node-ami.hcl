# gpu-node-ami.hcl — the AMI a GPU fleet boots from: Ubuntu 24.04 with the AWS kernel, NVIDIA's
# driver built for that kernel, docker-ce, and the NVIDIA container toolkit in CDI mode, with the
# NGC PyTorch image already in docker's store so the first job does not wait for a 20 GB pull.
# The disk is built without a build instance, uploaded through the EBS direct APIs, registered,
# copied to two more regions and shared with the training accounts.
#
#   gpuforge plan examples/gpu-node-ami.hcl
#
# Docker's and NVIDIA's apt repositories, with their signing keys, are implied by
# runtime "docker" { edition = "ce" }, runtime "nvidia" and driver { source = "nvidia" }.

variable "driver_branch" {
  type        = string
  default     = "570"
  description = "NVIDIA driver branch; NGC releases state the minimum they need."
}

variable "regions" {
  type    = list(string)
  default = ["us-east-1", "us-west-2", "eu-west-1"]
}

variable "share_accounts" {
  type    = list(string)
  default = ["111122223333", "444455556666"]
}

base "ubuntu-noble" {
  image = "docker.io/library/ubuntu:24.04"
}

driver "nvidia" {
  branch         = var.driver_branch
  kernel_module  = "open"
  source         = "nvidia"
  fabric_manager = true
}

runtime "docker" {
  edition = "ce"
}

runtime "nvidia" {
  toolkit_version = "1.17.*"
  mode            = "cdi"
}

framework "pytorch-node" {
  image = "nvcr.io/nvidia/pytorch:25.01-py3"
}

machine_image "gpu-node" {
  from           = base.ubuntu-noble
  kernel         = "linux-aws"
  driver         = driver.nvidia
  runtimes       = [runtime.docker, runtime.nvidia]
  preload        = [framework.pytorch-node]
  packages       = ["nvme-cli", "rdma-core", "ibverbs-utils"]
  instance_types = ["p5.48xlarge", "p4d.24xlarge", "g6e.12xlarge"]

  disk {
    size    = "64GiB"
    formats = ["raw", "qcow2"]
    boot    = "uefi"
  }

  ami {
    name          = "gpu-node-${var.driver_branch}-${formatdate("YYYYMMDD-hhmm", timestamp())}"
    description   = "Ubuntu 24.04, NVIDIA ${var.driver_branch} (open), docker-ce, NVIDIA container toolkit (CDI)"
    regions       = var.regions
    architecture  = "x86_64"
    boot_mode     = "uefi"
    imds          = "v2.0"
    ena           = true
    sriov         = true
    tpm           = true
    encrypted     = true
    deprecate_at  = timeadd(timestamp(), "2160h")
    ssm_parameter = "/gpuforge/gpu-node/latest"
    tags = {
      team = "ml-platform"
    }
    volume {
      size       = "64GiB"
      type       = "gp3"
      iops       = 6000
      throughput = 500
    }
    share {
      accounts = var.share_accounts
    }
  }
}

validate "gpu-node-host" {
  target = machine_image.gpu-node
  gpus   = "all"
  host {
    ecc = true
  }
  nvidia_smi {
    min_driver = var.driver_branch
  }
}
