package disk

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"
)

// The boot report's protocol on the serial console. The report script (seed.go) prints
//
//	GPUFORGE-BOOT-BEGIN v1
//	GPUFORGE-BOOT <key> <ok|fail|skip> <value…>
//	GPUFORGE-BOOT-END
//
// one line per fact. The prefix may come after other text on the same console line (a kernel
// message that was being printed), so it is looked for anywhere in a line.
const (
	reportPrefix = "GPUFORGE-BOOT"
	reportBegin  = "GPUFORGE-BOOT-BEGIN"
	reportEnd    = "GPUFORGE-BOOT-END"
)

// The statuses of a report line.
const (
	StatusOK   = "ok"
	StatusFail = "fail"
	StatusSkip = "skip"
)

// The verdicts of a boot check.
const (
	VerdictPass = "pass"
	VerdictFail = "fail"
)

// requiredKeys are the facts every boot report must have, whatever the image holds.
var requiredKeys = []string{"manifest", "kernel", "root", "cloud_init", "ssh"}

// consoleTailLines is how many of the console's last lines a report keeps.
const consoleTailLines = 20

// maxConsoleLine bounds a console line: text without a line break (a firmware redrawing a
// countdown) is cut into lines of this many bytes.
const maxConsoleLine = 4096

// BootLine is one fact of the boot report.
type BootLine struct {
	Key    string `json:"key"`    // such as "kernel" or "nvidia_module"
	Status string `json:"status"` // StatusOK, StatusFail or StatusSkip
	Value  string `json:"value"`  // what the guest found, or why the check failed or was skipped
}

// BootReport is the result of a boot check: the facts the guest reported and the verdict.
type BootReport struct {
	Verdict     string        `json:"verdict"`          // VerdictPass or VerdictFail
	Reason      string        `json:"reason,omitempty"` // why the verdict is fail
	Lines       []BootLine    `json:"lines"`
	Accel       string        `json:"accel,omitempty"`      // the accelerator QEMU used: "kvm" or "tcg"
	AccelNote   string        `json:"accel_note,omitempty"` // why --accel auto did not use KVM
	Took        time.Duration `json:"-"`                    // from QEMU's start to the report's end (or the end of the run)
	ConsoleTail []string      `json:"console_tail,omitempty"`
}

// MarshalJSON writes the report with Took as took_seconds.
func (r *BootReport) MarshalJSON() ([]byte, error) {
	type plain BootReport
	return json.Marshal(struct {
		*plain
		TookSeconds float64 `json:"took_seconds"`
	}{(*plain)(r), r.Took.Round(100 * time.Millisecond).Seconds()})
}

// WriteText writes the report as a small table of the facts (key, status, value), then the
// verdict line with the reason, the accelerator and the time taken, then, when the verdict is
// fail, the console's last lines.
func (r *BootReport) WriteText(w io.Writer) error {
	var b bytes.Buffer
	if len(r.Lines) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tSTATUS\tVALUE")
		for _, l := range r.Lines {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", l.Key, l.Status, l.Value)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	} else {
		b.WriteString("no boot report\n")
	}
	var how []string
	if r.Accel != "" {
		how = append(how, r.Accel)
	}
	if r.Took > 0 {
		how = append(how, r.Took.Round(time.Second).String())
	}
	fmt.Fprintf(&b, "\nverdict: %s", r.Verdict)
	if r.Reason != "" {
		fmt.Fprintf(&b, ": %s", r.Reason)
	}
	if len(how) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(how, ", "))
	}
	b.WriteString("\n")
	if r.AccelNote != "" {
		fmt.Fprintf(&b, "accel: %s\n", r.AccelNote)
	}
	if r.Verdict != VerdictPass && len(r.ConsoleTail) > 0 {
		fmt.Fprintf(&b, "\nthe console's last %d lines:\n", len(r.ConsoleTail))
		for _, l := range r.ConsoleTail {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// ParseConsole reads a whole serial console log, such as one saved with gpuforge boot
// --console or a cloud instance's console output, and returns its report and verdict. Accel
// and Took are left empty.
func ParseConsole(r io.Reader) (*BootReport, error) {
	s := newConsoleScanner()
	if _, err := io.Copy(s, bufio.NewReader(r)); err != nil {
		return nil, fmt.Errorf("reading the console log: %w", err)
	}
	s.Close()
	return s.report(consoleEnd{kind: endOfLog}), nil
}

// consoleEvent is what a consoleScanner tells the boot loop as it happens.
type consoleEvent int

const (
	// eventStuck: the console shows the boot cannot reach the report (the firmware found
	// nothing to boot, the root filesystem did not mount, the kernel panicked).
	eventStuck consoleEvent = iota + 1
	// eventReported: the report's END line came.
	eventReported
)

// consoleScanner follows a serial console as it is written: the boot report's lines, the
// last lines for the report's tail, and the first sign that the boot cannot reach the report.
// It is an io.Writer; Close ends a last line without a line break.
type consoleScanner struct {
	begun, ended bool
	lines        []BootLine
	garbled      []string // report lines that could not be read
	stuck        string   // why the boot cannot reach the report: the first sign of it, "" while it may
	cause        string   // the first line that may explain an emergency shell (a failed mount)
	tail         []string
	printed      bool   // the console printed something
	partial      []byte // the line being written
	events       chan consoleEvent
}

func newConsoleScanner() *consoleScanner { return &consoleScanner{} }

// Write takes the next bytes of the console.
func (s *consoleScanner) Write(p []byte) (int, error) {
	if len(p) > 0 {
		s.printed = true
	}
	for _, c := range p {
		if c == '\n' {
			s.line(s.partial)
			s.partial = s.partial[:0]
			continue
		}
		s.partial = append(s.partial, c)
		if len(s.partial) >= maxConsoleLine {
			s.line(s.partial)
			s.partial = s.partial[:0]
		}
	}
	// Prompts wait for input without a line break after them.
	if len(s.partial) > 0 && s.stuck == "" && !s.ended {
		if reason := s.promptSign(cleanConsoleLine(s.partial)); reason != "" {
			s.setStuck(reason)
		}
	}
	return len(p), nil
}

// Close takes what is left of the last line.
func (s *consoleScanner) Close() {
	if len(s.partial) > 0 {
		s.line(s.partial)
		s.partial = nil
	}
}

func (s *consoleScanner) notify(e consoleEvent) {
	if s.events != nil {
		select {
		case s.events <- e:
		default:
		}
	}
}

func (s *consoleScanner) setStuck(reason string) {
	s.stuck = reason
	s.notify(eventStuck)
}

func (s *consoleScanner) line(raw []byte) {
	l := cleanConsoleLine(raw)
	if strings.TrimSpace(l) == "" {
		return
	}
	s.tail = append(s.tail, l)
	if len(s.tail) > consoleTailLines {
		s.tail = s.tail[len(s.tail)-consoleTailLines:]
	}
	if i := strings.Index(l, reportPrefix); i >= 0 {
		s.reportLine(l[i:])
		return
	}
	if s.ended || s.stuck != "" {
		return // the shutdown after the report, or what follows the first sign
	}
	if s.cause == "" && isFailureCause(l) {
		s.cause = strings.TrimSpace(l)
	}
	if reason := s.stuckSign(l); reason != "" {
		s.setStuck(reason)
	}
}

// reportKey is what a report line's key looks like.
var reportKey = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

func (s *consoleScanner) reportLine(l string) {
	switch {
	case strings.HasPrefix(l, reportBegin):
		// A second BEGIN (the script ran again) starts the report over.
		s.begun, s.ended, s.lines, s.garbled = true, false, nil, nil
		return
	case strings.HasPrefix(l, reportEnd):
		if s.begun && !s.ended {
			s.ended = true
			s.notify(eventReported)
		}
		return
	}
	rest, ok := strings.CutPrefix(l, reportPrefix+" ")
	f := strings.SplitN(strings.TrimSpace(rest), " ", 3)
	if !ok || len(f) < 2 || !reportKey.MatchString(f[0]) ||
		(f[1] != StatusOK && f[1] != StatusFail && f[1] != StatusSkip) {
		s.garbled = append(s.garbled, l)
		return
	}
	bl := BootLine{Key: f[0], Status: f[1]}
	if len(f) == 3 {
		bl.Value = strings.TrimSpace(f[2])
	}
	s.lines = append(s.lines, bl)
}

// diskDevicePath is the UEFI device path of the checked disk: Boot pins its virtio-blk
// device at PCI slot 0x10 so that the firmware's "failed to load" line for it can be told
// from the others.
const diskDevicePath = "PciRoot(0x0)/Pci(0x10,0x0)"

// stuckSign says why a console line shows the boot cannot reach the report, or "".
func (s *consoleScanner) stuckSign(l string) string {
	t := strings.TrimSpace(l)
	switch {
	// OVMF's boot manager: the disk's boot option failed, no option is left, or it fell
	// back to the EFI shell or to network boot (tried only after the disk).
	case strings.Contains(t, "BdsDxe: failed to load") && strings.Contains(t, "from "+diskDevicePath):
		return "the firmware found nothing to boot: " + t
	case strings.Contains(t, "EFI Internal Shell"), strings.Contains(t, "UEFI Interactive Shell"):
		return "the firmware found nothing to boot (UEFI shell)"
	case strings.Contains(t, "No bootable option or device was found"), strings.Contains(t, "No bootable device"):
		return "the firmware found nothing to boot: " + t
	case strings.Contains(t, ">>Start PXE over"):
		return "the firmware found nothing to boot on the disk and tried network boot: " + t
	// The kernel and the initramfs.
	case strings.Contains(t, "VFS: Unable to mount root fs"):
		return "the root filesystem could not be mounted: " + fromMarker(t, "Kernel panic")
	case strings.Contains(t, "Kernel panic - not syncing"):
		return "the kernel panicked: " + fromMarker(t, "Kernel panic")
	case strings.Contains(t, "Dropping to a shell"):
		return "the root filesystem could not be mounted: " + t
	// systemd: emergency or rescue mode.
	case strings.Contains(t, "You are in emergency mode"), strings.Contains(t, "You are in rescue mode"),
		strings.Contains(t, "Give root password for maintenance"), strings.Contains(t, "Press Enter for maintenance"),
		strings.Contains(t, "Cannot open access to console, the root account is locked"):
		return s.emergency(t)
	}
	return ""
}

// promptSign is stuckSign for a prompt still waiting at the end of the console.
func (s *consoleScanner) promptSign(partial string) string {
	t := strings.TrimSpace(partial)
	switch {
	case strings.HasSuffix(t, "Shell>"):
		return "the firmware found nothing to boot (UEFI shell)"
	case strings.HasSuffix(t, "(initramfs)"):
		return "the root filesystem could not be mounted: " + s.causeOr("the initramfs dropped to a shell")
	}
	return ""
}

// emergency is the reason for systemd's emergency mode: the root filesystem could not be
// mounted, unless the failed mount the console showed is another one.
func (s *consoleScanner) emergency(marker string) string {
	if c := s.cause; c != "" && !mentionsRoot(c) {
		return "the guest stopped in emergency mode: " + c
	}
	return "the root filesystem could not be mounted: " + s.causeOr(marker)
}

func (s *consoleScanner) causeOr(l string) string {
	if s.cause != "" {
		return s.cause
	}
	return strings.TrimSpace(l)
}

// failureCauses are lines that explain why a boot ends in a shell: failed mounts and fsck.
// The first of them is kept: the later ones are mostly its consequences.
var failureCauses = regexp.MustCompile(`(?i)(wrong fs type|bad superblock|can't read superblock|` +
	`failed to mount|mount: |fsck failed|fsck\.\S+: |does not exist|unknown filesystem type|` +
	`gave up waiting for root|timed out waiting for device|dependency failed for \S+\.mount)`)

func isFailureCause(l string) bool { return failureCauses.MatchString(l) }

// mentionsRoot says whether a failure line is about the root filesystem.
func mentionsRoot(l string) bool {
	for _, s := range []string{"/sysroot", "sysroot.mount", "-.mount", " / ", "Root", "root", "ALERT!"} {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// fromMarker is l from marker on, or all of l when it does not hold marker.
func fromMarker(l, marker string) string {
	if i := strings.Index(l, marker); i >= 0 {
		return l[i:]
	}
	return l
}

// ansiEscape matches the terminal control sequences firmware and systemd print.
var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;=?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>78cDEHM])`)

// cleanConsoleLine is a console line as text: escape sequences and control characters gone.
func cleanConsoleLine(raw []byte) string {
	l := ansiEscape.ReplaceAllString(string(raw), "")
	l = strings.Map(func(r rune) rune {
		switch {
		case r == '\t':
			return ' '
		case r < 0x20 || r == 0x7f:
			return -1
		}
		return r
	}, l)
	return strings.TrimRight(strings.ToValidUTF8(l, "?"), " ")
}

// endKind is how a console ended.
type endKind int

const (
	endOfLog      endKind = iota // ParseConsole: the log ended
	endPoweredOff                // QEMU exited by itself: the guest powered off (or rebooted, -no-reboot)
	endTimeLimit                 // the time limit passed
	endStopped                   // Boot stopped QEMU after the console showed a sign (s.stuck) or the report
	endQEMUFailed                // QEMU exited with an error status
)

// consoleEnd is how and why a console ended.
type consoleEnd struct {
	kind   endKind
	limit  time.Duration // endTimeLimit
	accel  string        // endTimeLimit
	status string        // endQEMUFailed: the exit status and QEMU's last message
}

// report decides the verdict from what the console showed and how it ended.
func (s *consoleScanner) report(end consoleEnd) *BootReport {
	r := &BootReport{Lines: s.lines, ConsoleTail: s.tail}
	if r.Lines == nil {
		r.Lines = []BootLine{}
	}
	r.Reason = s.failure(end)
	r.Verdict = VerdictPass
	if r.Reason != "" {
		r.Verdict = VerdictFail
	}
	return r
}

// failure is why the check failed, or "" when it passed.
func (s *consoleScanner) failure(end consoleEnd) string {
	if s.begun && s.ended {
		return s.reportFailure()
	}
	if s.stuck != "" {
		return s.stuck
	}
	if s.begun {
		cut := "no " + reportEnd + " after " + s.lastReported()
		switch end.kind {
		case endPoweredOff:
			return "the guest powered off in the middle of the boot report (" + cut + ")"
		case endTimeLimit:
			return fmt.Sprintf("the boot report did not finish within %v (%s): %s", end.limit, strings.ToUpper(end.accel), cut)
		case endQEMUFailed:
			return "QEMU stopped in the middle of the boot report (" + end.status + "): " + cut
		}
		return "the boot report is cut off: " + cut
	}
	last := s.lastLines()
	switch end.kind {
	case endPoweredOff:
		return "guest powered off without a report; " + last
	case endTimeLimit:
		return fmt.Sprintf("no boot report within %v (%s); %s", end.limit, strings.ToUpper(end.accel), last)
	case endQEMUFailed:
		return "QEMU stopped before the boot report (" + end.status + "); " + last
	}
	return "the console has no boot report; " + last
}

// reportFailure checks a complete report: every line ok or skip, every required key there.
func (s *consoleScanner) reportFailure() string {
	var why []string
	seen := map[string]bool{}
	for _, l := range s.lines {
		seen[l.Key] = true
		if l.Status == StatusFail {
			why = append(why, l.Key+" failed: "+l.Value)
		}
	}
	for _, k := range requiredKeys {
		if !seen[k] {
			why = append(why, "the report has no "+k+" line")
		}
	}
	for _, g := range s.garbled {
		why = append(why, fmt.Sprintf("a report line is garbled: %q", g))
	}
	return strings.Join(why, "; ")
}

func (s *consoleScanner) lastReported() string {
	if len(s.lines) == 0 {
		return reportBegin
	}
	return "the " + s.lines[len(s.lines)-1].Key + " line"
}

// lastLines quotes the console's last three lines for a reason.
func (s *consoleScanner) lastLines() string {
	if !s.printed || len(s.tail) == 0 {
		return "the console printed nothing"
	}
	l := s.tail
	if len(l) > 3 {
		l = l[len(l)-3:]
	}
	q := make([]string, len(l))
	for i, x := range l {
		q[i] = strings.TrimSpace(x)
	}
	return "the console's last lines: " + strings.Join(q, " | ")
}
