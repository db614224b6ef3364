package disk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BootOptions configure Boot. The zero value boots with the defaults below.
type BootOptions struct {
	Format   string        // "raw" | "qcow2"; "" = detect with qemu-img info
	Timeout  time.Duration // 0: 15 minutes
	Memory   string        // "" = "2G"
	CPUs     int           // 0 = 2
	Accel    string        // "auto" (default) | "kvm" | "tcg"
	Firmware string        // OVMF code file; "" = found
	Console  io.Writer     // optional live copy of the serial console
}

const (
	defaultBootTimeout = 15 * time.Minute
	defaultBootMemory  = "2G"
	defaultBootCPUs    = 2

	// overlayGrowth is how much larger than the disk the overlay that boots is, so that the
	// report shows cloud-init grew the root partition and filesystem.
	overlayGrowth = 1 << 30

	// signGrace is how long QEMU keeps running after the console showed the boot cannot
	// reach the report, so that the report's console tail holds what followed (a panic's
	// trace, the emergency shell's hints).
	signGrace = 2 * time.Second
	// powerOffGrace is how long the guest has to power off after the report's END line
	// before QEMU is stopped; the report does not depend on it.
	powerOffGrace = 15 * time.Second
	// qemuStopGrace is how long QEMU has to exit after SIGTERM before SIGKILL.
	qemuStopGrace = 5 * time.Second
	// kvmProbeTimeout bounds the KVM probe of --accel auto: the firmware reaches its boot
	// manager in about a second under KVM.
	kvmProbeTimeout = 15 * time.Second
)

// Boot boots disk (raw or qcow2: GPT, UEFI, an ext4 root, cloud-init installed) in
// qemu-system-x86_64 with OVMF and reads the boot report the image prints on its serial
// console once cloud-init is done, using a cloud-init NoCloud seed (seed.go) that carries the
// report script. disk is never written: the guest boots a temporary qcow2 overlay 1 GiB
// larger than the disk, so the report also shows that cloud-init grew the root filesystem.
//
// The machine is a q35 with opt.Memory and opt.CPUs, virtio disks, virtio-net with user
// networking and a virtio RNG; -no-reboot. With Accel "auto", KVM is used when /dev/kvm opens
// read-write and the firmware boots under KVM (nested virtualization often fails), else TCG;
// the report says which, and why not KVM.
//
// A boot that cannot reach the report is seen on the console and stopped early: the firmware
// found nothing to boot, the root filesystem did not mount, the kernel panicked. Otherwise the
// check ends when the report is complete, when the guest powers off, or at opt.Timeout.
//
// The error is non-nil only when the check could not run (qemu or the firmware missing, a
// bad disk path, ctx cancelled; QEMU and the temporary files are gone then too); a disk that
// does not boot is a report with Verdict "fail".
func Boot(ctx context.Context, disk string, opt BootOptions) (*BootReport, error) {
	if err := opt.setDefaults(); err != nil {
		return nil, fmt.Errorf("boot: %w", err)
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, errors.New("boot: qemu-system-x86_64 is not installed: install the qemu-system-x86 package (apt-get install qemu-system-x86)")
	}
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		return nil, errors.New("boot: qemu-img is not installed: install the qemu-utils package (apt-get install qemu-utils)")
	}
	fw, err := findFirmware(opt.Firmware)
	if err != nil {
		return nil, fmt.Errorf("boot: %w", err)
	}
	disk, err = filepath.Abs(disk)
	if err != nil {
		return nil, fmt.Errorf("boot: %w", err)
	}
	if fi, err := os.Stat(disk); err != nil {
		return nil, fmt.Errorf("boot: the disk %s: %w", disk, err)
	} else if fi.IsDir() {
		return nil, fmt.Errorf("boot: the disk %s is a directory", disk)
	}
	info, err := bootDiskInfo(ctx, qemuImg, disk, opt.Format)
	if err != nil {
		return nil, fmt.Errorf("boot: %w", err)
	}

	dir, err := os.MkdirTemp("", "gpuforge-boot-")
	if err != nil {
		return nil, fmt.Errorf("boot: %w", err)
	}
	defer os.RemoveAll(dir)

	accel, note := opt.Accel, ""
	if accel == "auto" {
		accel, note = chooseAccel(ctx, qemu, fw, dir)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("boot: %w", context.Cause(ctx))
		}
	}
	m := &bootMachine{qemu: qemu, qemuImg: qemuImg, fw: fw, disk: disk, info: info, dir: dir, opt: opt}
	rep, err := m.run(ctx, accel)
	var kerr *kvmError
	if errors.As(err, &kerr) && opt.Accel == "auto" {
		// The probe passed, but KVM failed later in the boot: start over under TCG.
		note = "KVM failed during the boot (" + kerr.msg + ")"
		accel = "tcg"
		rep, err = m.run(ctx, accel)
	}
	if err != nil {
		return nil, fmt.Errorf("boot: %w", err)
	}
	rep.AccelNote = note
	return rep, nil
}

func (o *BootOptions) setDefaults() error {
	switch o.Format {
	case "", "raw", "qcow2":
	default:
		return fmt.Errorf("format %q: want raw or qcow2 (or empty to detect it)", o.Format)
	}
	switch o.Accel {
	case "":
		o.Accel = "auto"
	case "auto", "kvm", "tcg":
	default:
		return fmt.Errorf("accel %q: want auto, kvm or tcg", o.Accel)
	}
	if o.Timeout < 0 || o.CPUs < 0 {
		return errors.New("the time limit and the number of CPUs cannot be negative")
	}
	if o.Timeout == 0 {
		o.Timeout = defaultBootTimeout
	}
	if o.Memory == "" {
		o.Memory = defaultBootMemory
	}
	if o.CPUs == 0 {
		o.CPUs = defaultBootCPUs
	}
	return nil
}

// bootDisk is what qemu-img says about a disk.
type bootDisk struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
}

func bootDiskInfo(ctx context.Context, qemuImg, disk, format string) (bootDisk, error) {
	args := []string{"info", "--output=json"}
	if format != "" {
		args = append(args, "-f", format)
	}
	out, err := exec.CommandContext(ctx, qemuImg, append(args, disk)...).CombinedOutput()
	if err != nil {
		return bootDisk{}, fmt.Errorf("qemu-img info %s: %w: %s", disk, err, strings.TrimSpace(string(out)))
	}
	var d bootDisk
	if err := json.Unmarshal(out, &d); err != nil {
		return bootDisk{}, fmt.Errorf("qemu-img info %s: %w", disk, err)
	}
	if d.VirtualSize <= 0 {
		return bootDisk{}, fmt.Errorf("the disk %s is empty (qemu-img info: %s, %d bytes)", disk, d.Format, d.VirtualSize)
	}
	return d, nil
}

// firmware is an OVMF build: a code file with a variables template, or one combined image.
type firmware struct {
	code string
	vars string // "" for a combined image, loaded with -bios
}

// firmwareCandidates are where distributions install OVMF, best first: Debian and Ubuntu's
// 4 MiB and 2 MiB builds and their combined image, then Fedora's.
var firmwareCandidates = []firmware{
	{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
	{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
	{"/usr/share/qemu/OVMF.fd", ""},
	{"/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"},
}

// findFirmware returns OVMF: code when given, with the variables file next to it (its name
// with CODE replaced by VARS; a name without CODE is a combined image), else the first of
// firmwareCandidates installed.
func findFirmware(code string) (firmware, error) {
	if code != "" {
		if _, err := os.Stat(code); err != nil {
			return firmware{}, fmt.Errorf("firmware: %w", err)
		}
		base := filepath.Base(code)
		if !strings.Contains(base, "CODE") {
			return firmware{code: code}, nil
		}
		vars := filepath.Join(filepath.Dir(code), strings.Replace(base, "CODE", "VARS", 1))
		if _, err := os.Stat(vars); err != nil {
			return firmware{}, fmt.Errorf("firmware %s: no variables file next to it: %w", code, err)
		}
		return firmware{code: code, vars: vars}, nil
	}
	for _, f := range firmwareCandidates {
		if !bootFileExists(f.code) || (f.vars != "" && !bootFileExists(f.vars)) {
			continue
		}
		return f, nil
	}
	return firmware{}, errors.New("no UEFI firmware for QEMU (OVMF) found in /usr/share/OVMF or /usr/share/qemu: install the ovmf package (apt-get install ovmf)")
}

func bootFileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// firmwareArgs are QEMU's arguments for fw; vars is the writable copy of its variables.
func firmwareArgs(fw firmware, vars string) []string {
	if fw.vars == "" {
		return []string{"-bios", fw.code}
	}
	return []string{
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + qemuOptValue(fw.code),
		"-drive", "if=pflash,format=raw,unit=1,file=" + qemuOptValue(vars),
	}
}

// qemuOptValue escapes a value inside a QEMU -drive option list (a comma is doubled).
func qemuOptValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// copyFile copies src to dst (the firmware's variables: pflash needs a writable file).
func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o600)
}

// chooseAccel picks the accelerator of --accel auto, and says why not KVM.
func chooseAccel(ctx context.Context, qemu string, fw firmware, dir string) (accel, note string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg", "KVM is not usable: " + err.Error()
	}
	f.Close()
	if err := probeKVM(ctx, qemu, fw, dir); err != nil {
		return "tcg", "KVM probe failed: " + err.Error()
	}
	return "kvm", ""
}

// probeKVM starts the firmware under KVM with no disks and waits until its boot manager
// prints: /dev/kvm can open while running a guest fails (nested virtualization).
func probeKVM(ctx context.Context, qemu string, fw firmware, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, kvmProbeTimeout)
	defer cancel()
	vars := filepath.Join(dir, "probe-vars.fd")
	if fw.vars != "" {
		if err := copyFile(fw.vars, vars); err != nil {
			return err
		}
		defer os.Remove(vars)
	}
	args := append([]string{"-nodefaults", "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "256M",
		"-display", "none", "-no-reboot", "-serial", "stdio"}, firmwareArgs(fw, vars)...)
	cmd := exec.Command(qemu, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr := &lockedTail{events: make(chan struct{}, 1)}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	reached := make(chan bool, 1)
	go func() {
		var seen bytes.Buffer
		buf := make([]byte, 4096)
		for {
			n, err := out.Read(buf)
			seen.Write(buf[:n])
			if bytes.Contains(seen.Bytes(), []byte("BdsDxe")) {
				reached <- true
				io.Copy(io.Discard, out)
				return
			}
			if seen.Len() > 1<<16 {
				seen.Next(seen.Len() - 64)
			}
			if err != nil {
				reached <- false
				return
			}
		}
	}()
	var result error
	for result == nil {
		select {
		case ok := <-reached:
			if ok {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				return nil
			}
			result = fmt.Errorf("QEMU exited: %s", stderr.last())
		case <-stderr.events:
			if msg := stderr.find(kvmFailures...); msg != "" {
				result = errors.New(msg)
			}
		case <-ctx.Done():
			result = fmt.Errorf("the firmware did not reach its boot manager within %v", kvmProbeTimeout)
		}
	}
	if msg := stderr.find(kvmFailures...); msg != "" {
		result = errors.New(msg)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return result
}

// kvmFailures are what QEMU prints when KVM cannot run the guest.
var kvmFailures = []string{"KVM internal error", "KVM: entry failed", "kvm run failed", "failed to initialize kvm", "Could not access KVM"}

// kvmError is QEMU saying KVM failed while the guest ran.
type kvmError struct{ msg string }

func (e *kvmError) Error() string {
	return "QEMU's KVM accelerator failed (" + e.msg + "); try --accel tcg"
}

// bootMachine is one boot check's QEMU machine and its temporary files.
type bootMachine struct {
	qemu, qemuImg string
	fw            firmware
	disk          string
	info          bootDisk
	dir           string
	opt           BootOptions
}

// prepare writes the overlay, the firmware's variables and the seed into m.dir, and returns
// QEMU's arguments.
func (m *bootMachine) prepare(ctx context.Context, accel string) ([]string, error) {
	overlay := filepath.Join(m.dir, "overlay.qcow2")
	vars := filepath.Join(m.dir, "vars.fd")
	seedPath := filepath.Join(m.dir, "seed.img")
	for _, p := range []string{overlay, vars, seedPath} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	size := strconv.FormatInt(m.info.VirtualSize+overlayGrowth, 10)
	out, err := exec.CommandContext(ctx, m.qemuImg, "create", "-q", "-f", "qcow2", "-F", m.info.Format, "-b", m.disk, overlay, size).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("qemu-img create (the overlay on %s): %w: %s", m.disk, err, strings.TrimSpace(string(out)))
	}
	if m.fw.vars != "" {
		if err := copyFile(m.fw.vars, vars); err != nil {
			return nil, fmt.Errorf("copying the firmware's variables: %w", err)
		}
	}
	s, err := newSeed()
	if err != nil {
		return nil, err
	}
	if err := s.write(seedPath); err != nil {
		return nil, err
	}
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	accelArg := accel
	if accel == "tcg" {
		accelArg = "tcg,thread=multi"
	}
	args := []string{
		"-nodefaults", "-machine", "q35", "-accel", accelArg, "-cpu", cpu,
		"-m", m.opt.Memory, "-smp", strconv.Itoa(m.opt.CPUs),
		"-display", "none", "-serial", "stdio", "-no-reboot", "-rtc", "base=utc",
	}
	args = append(args, firmwareArgs(m.fw, vars)...)
	args = append(args,
		// The disk at a fixed PCI slot: see diskDevicePath.
		"-drive", "if=none,id=disk0,format=qcow2,file="+qemuOptValue(overlay),
		"-device", "virtio-blk-pci,drive=disk0,bootindex=1,addr=0x10",
		"-drive", "if=none,id=seed0,format=raw,file="+qemuOptValue(seedPath),
		"-device", "virtio-blk-pci,drive=seed0,addr=0x11",
		"-nic", "user,model=virtio-net-pci",
		"-device", "virtio-rng-pci",
	)
	return args, nil
}

// run boots the machine once under accel and follows its console.
func (m *bootMachine) run(ctx context.Context, accel string) (*BootReport, error) {
	args, err := m.prepare(ctx, accel)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(m.qemu, args...)
	// QEMU dies with gpuforge, even when gpuforge is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr := &lockedTail{events: make(chan struct{}, 1)}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	scanner := newConsoleScanner()
	scanner.events = make(chan consoleEvent, 2)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", m.qemu, err)
	}
	exited := make(chan struct{})
	var waitErr error
	var tookReport time.Duration
	go func() {
		w := io.Writer(scanner)
		if m.opt.Console != nil {
			w = io.MultiWriter(scanner, errorlessWriter{w: m.opt.Console})
		}
		_, _ = io.Copy(w, out)
		waitErr = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(qemuStopGrace):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	limit := time.NewTimer(m.opt.Timeout)
	defer limit.Stop()
	var grace <-chan time.Time
	end := consoleEnd{kind: endPoweredOff}
	var kvmFailure string
loop:
	for {
		select {
		case <-exited:
			break loop
		case <-ctx.Done():
			stop()
			return nil, context.Cause(ctx)
		case <-limit.C:
			stop()
			end = consoleEnd{kind: endTimeLimit, limit: m.opt.Timeout, accel: accel}
			break loop
		case e := <-scanner.events:
			if e == eventReported {
				tookReport = time.Since(start)
				grace = time.After(powerOffGrace)
			} else if grace == nil {
				grace = time.After(signGrace)
			}
		case <-grace:
			stop()
			end = consoleEnd{kind: endStopped}
			break loop
		case <-stderr.events:
			if msg := stderr.find(kvmFailures...); msg != "" {
				kvmFailure = msg
				stop()
				break loop
			}
		}
	}
	scanner.Close()
	if kvmFailure != "" {
		return nil, &kvmError{msg: kvmFailure}
	}
	if end.kind == endPoweredOff && waitErr != nil {
		if !scanner.printed {
			// QEMU could not start the machine: a bad argument, a file it cannot open.
			return nil, fmt.Errorf("%s: %w: %s", filepath.Base(m.qemu), waitErr, stderr.last())
		}
		end = consoleEnd{kind: endQEMUFailed, status: strings.TrimSpace(waitErr.Error() + ": " + stderr.last())}
	}
	rep := scanner.report(end)
	rep.Accel = accel
	rep.Took = time.Since(start)
	if tookReport > 0 {
		rep.Took = tookReport
	}
	return rep, nil
}

// errorlessWriter keeps the console flowing when the live copy cannot be written.
type errorlessWriter struct{ w io.Writer }

func (e errorlessWriter) Write(p []byte) (int, error) {
	_, _ = e.w.Write(p)
	return len(p), nil
}

// lockedTail keeps the end of QEMU's standard error, and tells events about each write.
type lockedTail struct {
	mu     sync.Mutex
	buf    []byte
	events chan struct{}
}

const stderrTail = 8 << 10

func (t *lockedTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > stderrTail {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-stderrTail:]...)
	}
	t.mu.Unlock()
	if t.events != nil {
		select {
		case t.events <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// find returns the first line of QEMU's standard error that holds one of subs, or "".
func (t *lockedTail) find(subs ...string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range strings.Split(string(t.buf), "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				return strings.TrimSpace(l)
			}
		}
	}
	return ""
}

// last is QEMU's last message worth quoting: its standard error's last lines without the
// warnings about CPU features the host lacks, on one line.
func (t *lockedTail) last() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var keep []string
	for _, l := range strings.Split(string(t.buf), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.Contains(l, "warning: host doesn't support requested feature") {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) > 3 {
		keep = keep[len(keep)-3:]
	}
	if len(keep) == 0 {
		return "no message"
	}
	return strings.Join(keep, " ")
}
