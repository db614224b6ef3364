# base.hcl — the base disk Packer's qemu builder starts from in bench/packer.sh: the same
# bootstrapped Debian bookworm minbase and the same cloud kernel as examples/gpu-node-debian.hcl,
# with gpuforge's host packages (systemd, cloud-init, openssh-server, sudo, ...), but no NVIDIA
# driver, no docker and no extra packages: Packer installs those over SSH. cloud-init in the disk
# reads the NoCloud seed Packer serves over HTTP (its address in the SMBIOS serial number, see
# gpu-node-debian.pkr.hcl) to let Packer's SSH key in.
#
#   gpuforge build --skip-boot-check -t packer-base bench/packer/base.hcl

base "debian-host" {
  bootstrap {
    distribution = "debian"
    suite        = "bookworm"
    variant      = "minbase"
    components   = ["main", "contrib", "non-free", "non-free-firmware"]
  }
}

machine_image "packer-base" {
  from   = base.debian-host
  kernel = "linux-image-cloud-amd64"

  disk {
    formats = ["qcow2"]
    boot    = "uefi"
  }
}
