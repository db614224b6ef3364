package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/buildkit/client"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/builders/disk"
	"github.com/gpuforge/gpuforge/pipeline"
	"github.com/gpuforge/gpuforge/recipes"
)

// machineFlags are build's options for machine images.
type machineFlags struct {
	skipBootCheck bool
	bootTimeout   time.Duration
	keepRootfs    bool
	noAMI         bool
}

// machineOutcome is what building one machine image produced, for the summary.
type machineOutcome struct {
	address string
	kernel  string
	disks   []pipeline.DiskRecord
	size    int64
	boot    *disk.BootReport
	steps   []buildkit.Step
	amis    []pipeline.AMIRecord
}

// kernelCmdline is the kernel command line of gpuforge's machine images: the console on the
// screen and on the first serial port (EC2's serial console, QEMU's -serial).
const kernelCmdline = "console=tty0 console=ttyS0,115200n8"

// buildMachine builds machine image name: its root filesystem on BuildKit, exported to a
// directory; the EFI system partition and fstab; the raw disk; the other formats; the boot
// check. The disks are written to OUT/NAME/NAME.FORMAT.
func (b *buildRun) buildMachine(ctx context.Context, c *client.Client, name string, opts []buildkit.BuildOption, built map[string]*buildkit.ImageResult) (*machineOutcome, error) {
	m := b.r.MachineImage(name)
	addr := recipes.KindMachineImage + "." + name
	out := &machineOutcome{address: addr}
	dir := filepath.Join(b.outDir, name)
	work := filepath.Join(dir, ".work")
	rootDir, espDir := filepath.Join(work, "rootfs"), filepath.Join(work, "esp")
	// The export needs an empty directory, and a previous run's tree is stale.
	if err := os.RemoveAll(work); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(espDir, 0o755); err != nil {
		return nil, err
	}
	if !b.machine.keepRootfs {
		defer os.RemoveAll(work)
	}
	res, err := buildkit.BuildMachineRootfs(ctx, c, b.r, name, rootDir, opts...)
	if err != nil {
		return nil, err
	}
	out.kernel, out.steps = res.Info.Kernel, res.Steps

	epoch := b.epoch
	if err := b.writePreloads(ctx, m, rootDir, built); err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	ids := disk.NewIDs(name, epoch)
	if err := disk.PrepareUEFI(rootDir, espDir, ids, disk.UEFIBoot{Kernel: res.Info.Kernel, Cmdline: kernelCmdline}); err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	layout := disk.Layout{RootDir: rootDir, ESPDir: espDir, IDs: ids, Epoch: epoch}
	formats := []string{"raw"}
	if d := m.Disk; d != nil {
		if d.Size != "" {
			if layout.Size, err = recipes.ParseSize(d.Size); err != nil {
				return nil, fmt.Errorf("%s: disk size: %w", addr, err)
			}
		}
		if len(d.Formats) > 0 {
			formats = d.Formats
		}
	}
	fmt.Fprintf(b.cmd.ErrOrStderr(), "gpuforge: %s: assembling the disk (kernel %s)\n", addr, res.Info.Kernel)
	raw := filepath.Join(dir, name+".raw")
	dk, err := disk.Assemble(ctx, raw, layout)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	out.size = dk.Size
	keepRaw := false
	for _, f := range formats {
		path := filepath.Join(dir, name+"."+f)
		if f == "raw" {
			keepRaw = true
		} else if err := disk.Convert(ctx, raw, f, path); err != nil {
			return nil, fmt.Errorf("%s: converting to %s: %w", addr, f, err)
		}
		if f == "qcow2" {
			if err := disk.CheckQcow2(ctx, path); err != nil {
				return nil, fmt.Errorf("%s: %w", addr, err)
			}
		}
		rec, err := diskRecord(f, path)
		if err != nil {
			return nil, err
		}
		out.disks = append(out.disks, rec)
	}
	if !b.machine.skipBootCheck {
		fmt.Fprintf(b.cmd.ErrOrStderr(), "gpuforge: %s: boot check of %s in QEMU\n", addr, raw)
		var console io.Writer
		if b.progress == "plain" {
			console = &prefixWriter{w: b.cmd.ErrOrStderr(), prefix: "console: "}
		}
		rep, err := disk.Boot(ctx, raw, disk.BootOptions{Format: "raw", Timeout: b.machine.bootTimeout, Console: console})
		if err != nil {
			return nil, fmt.Errorf("%s: boot check: %w", addr, err)
		}
		out.boot = rep
	}
	if m.AMI != nil && !b.machine.noAMI {
		switch {
		case out.boot != nil && out.boot.Verdict != disk.VerdictPass:
			fmt.Fprintf(b.cmd.ErrOrStderr(), "gpuforge: %s: not baking the AMI: the boot check failed\n", addr)
		default:
			sum := ""
			for _, d := range out.disks {
				if d.Format == "raw" {
					sum = d.SHA256
				}
			}
			if sum == "" {
				rec, err := diskRecord("raw", raw)
				if err != nil {
					return nil, err
				}
				sum = rec.SHA256
			}
			if out.amis, err = b.bakeAMI(ctx, m, raw, sum, b.manifest.BuildID, b.cmd.ErrOrStderr()); err != nil {
				return nil, fmt.Errorf("%s: AMI: %w", addr, err)
			}
		}
	}
	if !keepRaw {
		os.Remove(raw)
	}
	return out, nil
}

// diskRecord describes a disk file for the manifest.
func diskRecord(format, path string) (pipeline.DiskRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return pipeline.DiskRecord{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return pipeline.DiskRecord{}, fmt.Errorf("%s: %w", path, err)
	}
	return pipeline.DiskRecord{Format: format, Path: path, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// prefixWriter prefixes every line written through it, also when lines arrive in pieces.
type prefixWriter struct {
	w       io.Writer
	prefix  string
	midLine bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	var sb strings.Builder
	for _, piece := range strings.SplitAfter(string(b), "\n") {
		if piece == "" {
			continue
		}
		if !p.midLine {
			sb.WriteString(p.prefix)
		}
		sb.WriteString(piece)
		p.midLine = !strings.HasSuffix(piece, "\n")
	}
	if _, err := io.WriteString(p.w, sb.String()); err != nil {
		return 0, err
	}
	return len(b), nil
}
