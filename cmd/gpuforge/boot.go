package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/gpuforge/gpuforge/builders/disk"
	"github.com/gpuforge/gpuforge/pipeline"
)

func newBootCmd() *cobra.Command {
	var opt disk.BootOptions
	var consoleFile, reportFormat string
	cmd := &cobra.Command{
		Use:   "boot [flags] DISK",
		Short: "Boot a machine-image disk in QEMU and check the boot report it prints",
		Long: `Boot starts a machine-image disk (raw or qcow2: GPT, UEFI, an ext4 root, cloud-init in the
image) in qemu-system-x86_64 with OVMF firmware and checks the boot report the image prints on its
serial console, then powers it off. The disk is never written: the guest boots a temporary qcow2
overlay 1 GiB larger, so the report also shows that cloud-init grew the root filesystem.

A cloud-init NoCloud seed (a FAT drive labelled CIDATA) carries the report script; the image
carries no test code. Once cloud-init is done, the script checks the machine against
/etc/gpuforge/machine-image.json: the running kernel, the root filesystem (read-write, grown),
the NVIDIA module built for the running kernel (present, not loaded: QEMU has no GPU), docker,
the NVIDIA container runtime (CDI or legacy), cloud-init's status and sshd with host keys made
on this boot.

A boot that cannot reach the report fails as soon as the console shows it: the firmware found
nothing to boot, the root filesystem could not be mounted, the kernel panicked. Otherwise the
time limit ends it.

--accel auto uses KVM when /dev/kvm is usable and the firmware runs under it (nested
virtualization often is not), else TCG, which is about ten times slower. Needs the packages
qemu-system-x86, qemu-utils and ovmf.

Exit code 0 when the verdict is pass, 5 when it is fail, 4 when the check could not run.`,
		Example: `  gpuforge boot .gpuforge/out/gpu-node.qcow2
  gpuforge boot --accel tcg --timeout 30m --console console.log gpu-node.raw
  gpuforge boot --format-report json gpu-node.qcow2 > boot.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch opt.Format {
			case "", "raw", "qcow2":
			default:
				return exitf(ExitUsage, "--format %q: want raw or qcow2 (default: detected)", opt.Format)
			}
			switch opt.Accel {
			case "auto", "kvm", "tcg":
			default:
				return exitf(ExitUsage, "--accel %q: want auto, kvm or tcg", opt.Accel)
			}
			if reportFormat != "text" && reportFormat != "json" {
				return exitf(ExitUsage, "--format-report %q: want text or json", reportFormat)
			}
			if opt.Timeout <= 0 || opt.CPUs <= 0 {
				return exitf(ExitUsage, "--timeout and --cpus must be positive")
			}
			if consoleFile != "" {
				f, err := os.Create(consoleFile)
				if err != nil {
					return exitf(ExitFailed, "--console: %s", err)
				}
				defer f.Close()
				opt.Console = f
			}
			ctx, stop := pipeline.SignalContext(cmd.Context())
			defer stop()
			rep, err := disk.Boot(ctx, args[0], opt)
			if err != nil {
				if ctx.Err() != nil {
					return exitf(ExitInterrupted, "interrupted: QEMU stopped and its temporary files removed")
				}
				return exitf(ExitFailed, "%s", err)
			}
			if err := writeBootReport(cmd.OutOrStdout(), rep, reportFormat); err != nil {
				return exitf(ExitFailed, "%s", err)
			}
			if rep.Verdict != disk.VerdictPass {
				return exitf(ExitValidationFailed, "the boot check failed: %s", rep.Reason)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.Format, "format", "", "the disk's format, raw or qcow2 (default: detected with qemu-img info)")
	f.DurationVar(&opt.Timeout, "timeout", 15*time.Minute, "time limit for the boot report")
	f.StringVar(&opt.Memory, "memory", "2G", "guest memory, in QEMU's -m syntax")
	f.IntVar(&opt.CPUs, "cpus", 2, "guest vCPUs")
	f.StringVar(&opt.Accel, "accel", "auto", "accelerator: auto, kvm or tcg")
	f.StringVar(&opt.Firmware, "firmware", "", "OVMF code file, with its VARS file next to it (default: found in /usr/share/OVMF or /usr/share/qemu)")
	f.StringVar(&consoleFile, "console", "", "save the whole serial console to this file")
	f.StringVar(&reportFormat, "format-report", "text", "report format: text or json")
	return cmd
}

func writeBootReport(w io.Writer, rep *disk.BootReport, format string) error {
	if format == "json" {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return err
	}
	return rep.WriteText(w)
}
