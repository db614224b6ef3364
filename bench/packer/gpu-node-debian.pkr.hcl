# gpu-node-debian.pkr.hcl — the Packer side of bench/packer.sh: the GPU host image of
# examples/gpu-node-debian.hcl baked the Packer way, with the qemu builder bundled in Packer v1.9.4.
# It boots the base disk gpuforge makes from bench/packer/base.hcl (Debian bookworm minbase, the
# cloud kernel, cloud-init, sshd; no driver, no docker), lets cloud-init put a throwaway SSH key in
# from a NoCloud seed Packer serves over HTTP, runs provision.sh over SSH (the kernel headers, Debian's
# NVIDIA 535 driver built by DKMS, docker.io, the recipe's packages, gpuforge's host setup) and
# shuts down. Everything machine-specific comes in as variables from bench/packer.sh: the base
# disk, the apt mirror, the OVMF files, the key, the packages.
#
#   packer build -var base_disk=... -var mirror=... -var 'packages=["pciutils"]' ... bench/packer
#
# Packer warns "Bundled plugins used": that is on purpose. The qemu builder bundled in v1.9.4 is the
# one benchmarked; a required_plugins block would have `packer init` download the plugin instead.

variable "base_disk" {
  type        = string
  description = "the qcow2 disk of bench/packer/base.hcl"
}

variable "output_dir" {
  type        = string
  description = "where Packer writes gpu-node-debian.qcow2 (must not exist)"
}

variable "mirror" {
  type        = string
  default     = ""
  description = "Debian archive mirror, as the VM reaches it; empty keeps the base disk's apt sources"
}

variable "packages" {
  type        = list(string)
  default     = ["pciutils"]
  description = "the machine image's packages (examples/gpu-node-debian.hcl: pciutils)"
}

variable "ssh_public_key" {
  type = string
}

variable "ssh_private_key_file" {
  type = string
}

variable "efi_firmware_code" {
  type = string
}

variable "efi_firmware_vars" {
  type = string
}

variable "console_log" {
  type        = string
  description = "the VM's serial console goes to this file"
}

variable "accelerator" {
  type    = string
  default = "tcg"
}

variable "cpus" {
  type    = number
  default = 2
}

variable "memory" {
  type    = number
  default = 4096
}

source "qemu" "gpu-node-debian" {
  # Boot a copy of the base disk (not an overlay on it: the output stands alone, as gpuforge's does),
  # grown to 8 GiB; cloud-init grows the root partition and filesystem on the first boot.
  disk_image       = true
  use_backing_file = false
  iso_url          = var.base_disk
  iso_checksum     = "none"
  format           = "qcow2"
  disk_size        = "8G"
  disk_interface   = "virtio"
  net_device       = "virtio-net"
  output_directory = var.output_dir
  vm_name          = "gpu-node-debian.qcow2"

  accelerator       = var.accelerator
  machine_type      = "q35"
  cpu_model         = "max"
  cpus              = var.cpus
  memory            = var.memory
  headless          = true
  efi_boot          = true
  efi_firmware_code = var.efi_firmware_code
  efi_firmware_vars = var.efi_firmware_vars

  # The NoCloud seed, served by Packer's HTTP server and named to cloud-init by the SMBIOS serial
  # number (ds=nocloud-net;s=URL): a user with the key and passwordless sudo. (A cd_content seed
  # needs a CD-ROM the cloud kernel sees: it saw none on q35's default AHCI interface in a test
  # boot, and the qemu builder attaches virtio-scsi CD-ROMs with a device that does not exist on x86.)
  http_content = {
    "/meta-data"   = "instance-id: packer-${uuidv4()}\nlocal-hostname: packer\n"
    "/vendor-data" = "" # else cloud-init asks for it ten times, a second apart
    "/user-data"   = <<-EOT
      #cloud-config
      users:
        - name: packer
          sudo: "ALL=(ALL) NOPASSWD:ALL"
          shell: /bin/bash
          lock_passwd: true
          ssh_authorized_keys:
            - ${var.ssh_public_key}
    EOT
  }
  qemuargs = [
    ["-smbios", "type=1,serial=ds=nocloud-net;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/"],
    ["-serial", "file:${var.console_log}"],
  ]

  boot_wait              = "1s"
  communicator           = "ssh"
  ssh_username           = "packer"
  ssh_private_key_file   = var.ssh_private_key_file
  ssh_timeout            = "30m"
  ssh_handshake_attempts = 100
  shutdown_command       = "sudo systemctl poweroff"
  shutdown_timeout       = "15m"
}

build {
  sources = ["source.qemu.gpu-node-debian"]

  provisioner "shell" {
    script          = "${path.root}/provision.sh"
    execute_command = "chmod +x {{ .Path }}; sudo {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "MIRROR=${var.mirror}",
      "PACKAGES=${join(" ", var.packages)}",
    ]
  }
}
