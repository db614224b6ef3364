# gpu-node-debian.hcl — a GPU host disk from nothing but Debian's mirror: bookworm with the cloud
# kernel, Debian's NVIDIA 535 driver built by DKMS for that kernel, and docker. It builds offline
# from NVIDIA's and Docker's servers, so it is the machine image the tests boot in QEMU.
#
#   gpuforge build -t gpu-node-debian examples/gpu-node-debian.hcl
#
# The disks land in .gpuforge/out/gpu-node-debian/ (raw and qcow2), after a boot check in QEMU.

base "debian-host" {
  bootstrap {
    distribution = "debian"
    suite        = "bookworm"
    variant      = "minbase"
    components   = ["main", "contrib", "non-free", "non-free-firmware"]
  }
}

driver "debian-535" {
  branch        = "535"
  source        = "distro"
  kernel_module = "proprietary"
}

runtime "docker-distro" {
  type    = "docker"
  edition = "distro"
}

machine_image "gpu-node-debian" {
  from     = base.debian-host
  kernel   = "linux-image-cloud-amd64"
  driver   = driver.debian-535
  runtimes = [runtime.docker-distro]
  packages = ["pciutils"]

  disk {
    formats = ["raw", "qcow2"]
    boot    = "uefi"
  }
}
