package disk

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"go.yaml.in/yaml/v3"

	"github.com/gpuforge/gpuforge/internal/testenv"
)

// update makes the golden tests of this package rewrite their golden files from what the code
// produces now: go test ./builders/disk/ -run Golden -update
var update = flag.Bool("update", false, "rewrite golden files under testdata/ with the current output")

// recordedBoots are the console logs under testdata/boot and what each must decide.
var recordedBoots = []struct {
	name    string
	verdict string
	reason  string // a part of the reason ("" for pass)
	keys    []string
}{
	{"pass", VerdictPass, "", []string{"manifest", "kernel", "root", "root_size", "nvidia_module", "docker", "nvidia_runtime", "cloud_init", "ssh"}},
	{"no_end", VerdictFail, "the boot report is cut off: no GPUFORGE-BOOT-END after the docker line", nil},
	{"nvidia_module_fail", VerdictFail, "nvidia_module failed: /lib/modules/6.1.0-28-cloud-amd64/updates/dkms/nvidia-current.ko was built for 6.1.0-27-cloud-amd64", nil},
	{"kernel_panic", VerdictFail, "the root filesystem could not be mounted: Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)", nil},
	{"emergency", VerdictFail, "the root filesystem could not be mounted: ALERT!  UUID=3f6c2a8e-5d7b-4c1e-9a0f-2b8d4e6f1a3c does not exist.  Dropping to a shell!", nil},
	{"emergency_systemd", VerdictFail, "the guest stopped in emergency mode: [FAILED] Failed to mount boot-efi.mount - /boot/efi.", nil},
	{"uefi_shell", VerdictFail, "the firmware found nothing to boot", nil},
	// A real boot under TCG of a machine image built by gpuforge (Debian 12, systemd colours
	// and all): every check passed but cloud-init's, whose locale module failed.
	{"debian12_tcg", VerdictFail, `cloud_init failed: status: error (exit 1): detail: ('locale', ProcessExecutionError(`,
		[]string{"manifest", "kernel", "root", "root_size", "nvidia_module", "docker", "nvidia_runtime", "cloud_init", "ssh"}},
}

func TestParseConsoleGolden(t *testing.T) {
	for _, tc := range recordedBoots {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", "boot", tc.name+".log"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			rep, err := ParseConsole(f)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Verdict != tc.verdict {
				t.Errorf("verdict %q, want %q (reason %q)", rep.Verdict, tc.verdict, rep.Reason)
			}
			if tc.reason == "" && rep.Reason != "" || !strings.Contains(rep.Reason, tc.reason) {
				t.Errorf("reason %q, want one with %q", rep.Reason, tc.reason)
			}
			if tc.keys != nil {
				var got []string
				for _, l := range rep.Lines {
					got = append(got, l.Key)
				}
				if strings.Join(got, " ") != strings.Join(tc.keys, " ") {
					t.Errorf("keys %v, want %v", got, tc.keys)
				}
			}
			rep.Accel, rep.Took = "tcg", 83*time.Second
			var text bytes.Buffer
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, filepath.Join("testdata", "boot", tc.name+".golden"), text.Bytes())
		})
	}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it); got:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestConsoleScannerSigns checks that the signs of a boot that cannot reach the report are
// seen as they arrive, prompts without a line break included, so that Boot stops QEMU early.
func TestConsoleScannerSigns(t *testing.T) {
	for _, tc := range []struct {
		name, console, reason string
	}{
		{"efi shell prompt", "\x1b[2J\x1b[01;01HUEFI v2.70 (EDK II, 0x00010000)\r\nmapping\r\n\x1b[1m\x1b[33mShell> ", "the firmware found nothing to boot (UEFI shell)"},
		{"disk not bootable", `BdsDxe: failed to load Boot0001 "UEFI Misc Device" from PciRoot(0x0)/Pci(0x10,0x0): Not Found` + "\r\n",
			`the firmware found nothing to boot: BdsDxe: failed to load Boot0001 "UEFI Misc Device" from PciRoot(0x0)/Pci(0x10,0x0): Not Found`},
		{"initramfs prompt", "Gave up waiting for root file system device.\r\n\r\nBusyBox v1.35.0 (Debian 1:1.35.0-4+b3) built-in shell (ash)\r\n(initramfs) ",
			"the root filesystem could not be mounted: Gave up waiting for root file system device."},
		{"maintenance prompt", "You are in emergency mode. After logging in, type \"journalctl -xb\" to view\r\nGive root password for maintenance\r\n(or press Control-D to continue): ",
			"the root filesystem could not be mounted: You are in emergency mode."},
		{"other panic", "[    3.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\r\n", "the kernel panicked: Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newConsoleScanner()
			s.events = make(chan consoleEvent, 2)
			// Byte by byte, as a slow serial line may deliver it.
			for i := 0; i < len(tc.console); i++ {
				s.Write([]byte{tc.console[i]})
			}
			select {
			case e := <-s.events:
				if e != eventStuck {
					t.Fatalf("event %v, want eventStuck", e)
				}
			default:
				t.Fatal("no event before the console was closed")
			}
			if !strings.HasPrefix(s.stuck, tc.reason) {
				t.Errorf("reason %q, want %q", s.stuck, tc.reason)
			}
			if rep := s.report(consoleEnd{kind: endStopped}); rep.Verdict != VerdictFail || rep.Reason != s.stuck {
				t.Errorf("report %q %q, want fail with the sign's reason", rep.Verdict, rep.Reason)
			}
		})
	}
}

// TestNoSignsInHealthyBoots checks that nothing in boots that reached the report looks like a
// boot that cannot: such a sign would make Boot stop QEMU before the report.
func TestNoSignsInHealthyBoots(t *testing.T) {
	for _, name := range []string{"pass", "nvidia_module_fail", "debian12_tcg"} {
		data, err := os.ReadFile(filepath.Join("testdata", "boot", name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		s := newConsoleScanner()
		s.events = make(chan consoleEvent, 2)
		s.Write(data)
		s.Close()
		if s.stuck != "" || len(s.events) != 1 || <-s.events != eventReported {
			t.Errorf("%s: stuck %q, %d events", name, s.stuck, len(s.events))
		}
	}
}

// TestBootReportEnds checks the reasons for the ways a console can end without a report.
func TestBootReportEnds(t *testing.T) {
	noise := "[    2.000000] Run /init as init process\r\n[  OK  ] Reached target multi-user.target - Multi-User System.\r\n"
	for _, tc := range []struct {
		name, console string
		end           consoleEnd
		reason        string
	}{
		{"powered off", noise, consoleEnd{kind: endPoweredOff},
			"guest powered off without a report; the console's last lines: [    2.000000] Run /init as init process | [  OK  ] Reached target multi-user.target - Multi-User System."},
		{"time limit", noise, consoleEnd{kind: endTimeLimit, limit: 10 * time.Minute, accel: "tcg"},
			"no boot report within 10m0s (TCG); the console's last lines: "},
		{"time limit silent", "", consoleEnd{kind: endTimeLimit, limit: 3 * time.Second, accel: "kvm"},
			"no boot report within 3s (KVM); the console printed nothing"},
		{"time limit in the report", noise + "GPUFORGE-BOOT-BEGIN v1\r\nGPUFORGE-BOOT manifest ok gpu-node\r\n", consoleEnd{kind: endTimeLimit, limit: time.Minute, accel: "tcg"},
			"the boot report did not finish within 1m0s (TCG): no GPUFORGE-BOOT-END after the manifest line"},
		{"powered off in the report", "GPUFORGE-BOOT-BEGIN v1\r\n", consoleEnd{kind: endPoweredOff},
			"the guest powered off in the middle of the boot report (no GPUFORGE-BOOT-END after GPUFORGE-BOOT-BEGIN)"},
		{"missing keys and garbled", "GPUFORGE-BOOT-BEGIN v1\r\nGPUFORGE-BOOT manifest ok x\r\nGPUFORGE-BOOT kernel ok 6.1\r\nGPUFORGE-BOOT root o[   9.1] random: crng init done\r\nGPUFORGE-BOOT cloud_init ok done\r\nGPUFORGE-BOOT ssh skip none\r\nGPUFORGE-BOOT-END\r\n",
			consoleEnd{kind: endPoweredOff}, `the report has no root line; a report line is garbled: "GPUFORGE-BOOT root o[   9.1] random: crng init done"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newConsoleScanner()
			s.Write([]byte(tc.console))
			s.Close()
			rep := s.report(tc.end)
			if rep.Verdict != VerdictFail || !strings.HasPrefix(rep.Reason, tc.reason) {
				t.Errorf("got %s: %q\nwant fail: %q", rep.Verdict, rep.Reason, tc.reason)
			}
		})
	}
}

func TestBootReportJSON(t *testing.T) {
	rep := &BootReport{Verdict: VerdictPass, Lines: []BootLine{{"kernel", StatusOK, "6.1.0-28-cloud-amd64"}}, Accel: "kvm", Took: 61500 * time.Millisecond}
	b, err := rep.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"verdict":"pass","lines":[{"key":"kernel","status":"ok","value":"6.1.0-28-cloud-amd64"}],"accel":"kvm","took_seconds":61.5}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func TestSeed(t *testing.T) {
	s, err := newSeed()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.instanceID, "gpuforge-boot-check-") || len(s.instanceID) != len("gpuforge-boot-check-")+12 {
		t.Errorf("instance-id %q", s.instanceID)
	}
	if other, _ := newSeed(); other.instanceID == s.instanceID {
		t.Errorf("two seeds have the same instance-id %q", s.instanceID)
	}
	path := filepath.Join(t.TempDir(), "seed.img")
	if err := s.write(path); err != nil {
		t.Fatal(err)
	}

	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(0)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(fs.Label()); got != "CIDATA" {
		t.Errorf("label %q, want CIDATA", got)
	}
	meta, err := fs.ReadFile("meta-data")
	if err != nil {
		t.Fatal(err)
	}
	if want := "instance-id: " + s.instanceID + "\nlocal-hostname: gpuforge-boot-check\n"; string(meta) != want {
		t.Errorf("meta-data:\n%s\nwant:\n%s", meta, want)
	}
	user, err := fs.ReadFile("user-data")
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(user), "\n")
	if first != "#cloud-config" {
		t.Errorf("user-data begins with %q, want #cloud-config", first)
	}
	if !strings.Contains(string(user), "content: |") {
		t.Errorf("the files of user-data are not literal blocks; user-data:\n%s", user)
	}
	var cc struct {
		WriteFiles []map[string]string `yaml:"write_files"`
		Runcmd     [][]string          `yaml:"runcmd"`
	}
	if err := yaml.Unmarshal(user, &cc); err != nil {
		t.Fatalf("user-data is not YAML: %v\n%s", err, user)
	}
	want := map[string]struct{ perm, content string }{
		"/run/gpuforge/boot-report":                        {"0755", reportScript},
		"/run/systemd/system/gpuforge-boot-report.service": {"0644", reportUnit},
	}
	if len(cc.WriteFiles) != len(want) {
		t.Errorf("write_files has %d files, want %d", len(cc.WriteFiles), len(want))
	}
	for _, f := range cc.WriteFiles {
		w, ok := want[f["path"]]
		if !ok {
			t.Errorf("write_files writes %s", f["path"])
			continue
		}
		if f["permissions"] != w.perm || f["owner"] != "root:root" || f["content"] != w.content {
			t.Errorf("write_files %s: permissions %s, owner %s, content as written: %v", f["path"], f["permissions"], f["owner"], f["content"] == w.content)
		}
	}
	if got := fmt.Sprint(cc.Runcmd); got != "[[systemctl daemon-reload] [systemctl start --no-block gpuforge-boot-report.service]]" {
		t.Errorf("runcmd %s", got)
	}
	for _, l := range []string{"After=cloud-final.service", "ExecStart=/bin/sh /run/gpuforge/boot-report", "Type=oneshot"} {
		if !strings.Contains(reportUnit, l) {
			t.Errorf("the unit has no %q line", l)
		}
	}
}

func TestReportScriptSyntax(t *testing.T) {
	for _, sh := range []string{"sh", "dash", "bash"} {
		path, err := exec.LookPath(sh)
		if err != nil {
			continue
		}
		cmd := exec.Command(path, "-n")
		cmd.Stdin = strings.NewReader(reportScript)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s", sh, err, out)
		}
	}
	if strings.Contains(reportScript, "\t") {
		t.Error("the report script has tabs: user-data would quote it instead of keeping a literal block")
	}
}

// fakeGuest is a machine for the report script: a root directory with the files it reads and
// a directory of programs that stand for the guest's commands.
type fakeGuest struct {
	kernel     string // what uname -r says
	vermagic   string // the nvidia module's vermagic
	manifest   string
	rootGrown  bool   // the root partition reaches the end of the disk
	hostKeyOld bool   // the host keys predate the boot
	preload    string // /etc/gpuforge/preload.list; docker's store holds only "present:1"
}

// run runs the report script on the fake machine and returns what it printed on its console.
func (g fakeGuest) run(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	root, bin := filepath.Join(dir, "root"), filepath.Join(dir, "bin")
	const sectors = 10485760 // a 5 GiB disk: 4 GiB and the overlay's 1 GiB
	vda2Size := sectors - 1050624 - 2048
	if !g.rootGrown {
		vda2Size -= 2097152 // 1 GiB short
	}
	files := map[string]string{
		"etc/gpuforge/machine-image.json":          g.manifest,
		"proc/stat":                                "cpu  1 2 3\nbtime 1764331200\nprocesses 812\n",
		"sys/devices/pci/block/vda/size":           fmt.Sprint(sectors),
		"sys/devices/pci/block/vda/vda1/partition": "1",
		"sys/devices/pci/block/vda/vda1/start":     "2048",
		"sys/devices/pci/block/vda/vda1/size":      "1048576",
		"sys/devices/pci/block/vda/vda2/partition": "2",
		"sys/devices/pci/block/vda/vda2/start":     "1050624",
		"sys/devices/pci/block/vda/vda2/size":      fmt.Sprint(vda2Size),
		"etc/docker/daemon.json":                   "{\n  \"features\": {\n    \"cdi\": true\n  }\n}\n",
		"var/log/cloud-init.log":                   "2025-11-28 12:00:21,123 - cc_growpart.py[INFO]: '/' resized: changed (/dev/vda, 2) from 3758096384 to 4829741056\n",
		"etc/ssh/ssh_host_ed25519_key":             "key",
		"etc/ssh/ssh_host_rsa_key":                 "key",
		"etc/cdi/.keep":                            "",
	}
	if g.preload != "" {
		files["etc/gpuforge/preload.list"] = g.preload
	}
	for name, content := range files {
		if name == "etc/gpuforge/machine-image.json" && content == "" {
			continue
		}
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if g.hostKeyOld {
		old := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		for _, k := range []string{"ssh_host_ed25519_key", "ssh_host_rsa_key"} {
			if err := os.Chtimes(filepath.Join(root, "etc/ssh", k), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "sys/class/block"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"vda1", "vda2"} {
		if err := os.Symlink(filepath.Join(root, "sys/devices/pci/block/vda", p), filepath.Join(root, "sys/class/block", p)); err != nil {
			t.Fatal(err)
		}
	}
	fsBlocks := vda2Size / 8
	programs := map[string]string{
		"uname":    `echo "$FAKE_KERNEL"`,
		"dmesg":    `exit 0`,
		"findmnt":  `echo "/dev/vda2 ext4 rw,relatime,discard,errors=remount-ro"`,
		"dumpe2fs": fmt.Sprintf(`printf 'dumpe2fs 1.47.0 (5-Feb-2023)\nBlock count:              %d\nReserved block count:     0\nBlock size:               4096\n'`, fsBlocks),
		"modinfo": `
case "$*" in
*"-F vermagic nvidia-current") [ -n "$FAKE_VERMAGIC" ] || exit 1; echo "$FAKE_VERMAGIC" ;;
*"-F filename nvidia-current") echo "/lib/modules/$FAKE_KERNEL/updates/dkms/nvidia-current.ko" ;;
*"-F version nvidia-current") echo 535.216.01 ;;
*) echo "modinfo: ERROR: Module nvidia not found." >&2; exit 1 ;;
esac`,
		"docker": `
case "$*" in
*ServerVersion*) echo 27.5.1 ;;
*Runtimes*) echo "io.containerd.runc.v2 nvidia runc " ;;
*CDISpecDirs*) echo '["/etc/cdi","/var/run/cdi"]' ;;
"image inspect present:1") echo '[{}]' ;;
*) exit 1 ;;
esac`,
		"systemctl": `
case "$*" in
"is-active --quiet ssh.service") exit 0 ;;
is-active*) echo active ;;
"is-enabled nvidia-cdi-refresh.service") echo enabled ;;
"show -p ActiveState --value gpuforge-preload.service") echo active ;;
is-enabled*) echo disabled; exit 1 ;;
*) echo "unexpected systemctl $*" >&2; exit 1 ;;
esac`,
		"cloud-init": `
case "$*" in
"status --wait") exit 0 ;;
"status --long") printf 'status: done\nextended_status: done\nboot_status_code: enabled-by-generator\nlast_update: Fri, 28 Nov 2025 12:00:40 +0000\ndetail:\nDataSourceNoCloud [seed=/dev/vdb][dsmode=net]\nerrors: []\nrecoverable_errors: {}\n' ;;
*) exit 1 ;;
esac`,
	}
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range programs {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(dir, "boot-report")
	if err := os.WriteFile(script, []byte(reportScript), 0o755); err != nil {
		t.Fatal(err)
	}
	console := filepath.Join(dir, "console")
	if err := os.WriteFile(console, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", script)
	cmd.Env = []string{
		"GPUFORGE_BOOT_ROOT=" + root, "GPUFORGE_BOOT_CONSOLE=" + console, "GPUFORGE_BOOT_POWEROFF=no",
		"GPUFORGE_BOOT_PATH=" + bin + ":/usr/bin:/bin", "FAKE_KERNEL=" + g.kernel, "FAKE_VERMAGIC=" + g.vermagic,
	}
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("the report script: %v\n%s", err, out)
	}
	out, err := os.ReadFile(console)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

const testManifest = `{"schema":"gpuforge.machine-image/v1","name":"gpu-node","kernel":"6.1.0-28-cloud-amd64",
 "driver":{"module":"nvidia-current","version":"535.216.01","flavor":"proprietary"},
 "runtimes":{"docker":"distro","nvidia":"cdi"}}`

// TestReportScriptFakeGuest runs the report script on a fake machine and reads what it
// printed with the host's parser.
func TestReportScriptFakeGuest(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	const k = "6.1.0-28-cloud-amd64"
	for _, tc := range []struct {
		name  string
		guest fakeGuest
		want  map[string]string // key -> "status value"
	}{
		{"pass", fakeGuest{kernel: k, vermagic: k + " SMP preempt mod_unload modversions ", manifest: testManifest, rootGrown: true},
			map[string]string{
				"manifest":       "ok gpu-node",
				"kernel":         "ok " + k,
				"root":           "ok /dev/vda2 ext4 rw,relatime,discard,errors=remount-ro",
				"root_size":      "ok 4606 MiB filesystem on /dev/vda2, grown to the end of the 5120 MiB disk",
				"nvidia_module":  "ok /lib/modules/" + k + "/updates/dkms/nvidia-current.ko 535.216.01 for " + k,
				"docker":         "ok docker.service active, server 27.5.1 (distro)",
				"nvidia_runtime": `ok CDI enabled (/etc/docker/daemon.json); docker CDI spec dirs ["/etc/cdi","/var/run/cdi"]; specs: none yet (no GPU here); nvidia-cdi-refresh.service enabled`,
				"preload":        "skip the image preloads no container images",
				"cloud_init":     "ok done, DataSourceNoCloud [seed=/dev/vdb][dsmode=net]",
				"ssh":            "ok ssh.service active, host keys made on this boot: ed25519 rsa",
			}},
		{"fail", fakeGuest{kernel: k, vermagic: "6.1.0-27-cloud-amd64 SMP mod_unload", rootGrown: false, hostKeyOld: true,
			manifest: strings.Replace(strings.Replace(testManifest, `"driver":{`, `"driver":null, "x":{`, 1), `"nvidia":"cdi"`, `"nvidia":""`, 1)},
			map[string]string{
				"kernel":         "ok " + k,
				"root_size":      "fail /dev/vda2 (3582 MiB) ends 1025 MiB before the end of the 5120 MiB disk: growpart did not grow it (cloud-init.log: '/' resized: changed (/dev/vda, 2) from 3758096384 to 4829741056)",
				"nvidia_module":  "skip the image has no NVIDIA driver",
				"nvidia_runtime": "skip the image has no NVIDIA container runtime",
				"ssh":            "fail host keys from before this boot: ed25519 rsa (the image ships host keys, so every machine made from it would share them)",
			}},
		{"wrong module and kernel", fakeGuest{kernel: "6.1.0-29-cloud-amd64", vermagic: "6.1.0-27-cloud-amd64 SMP mod_unload", manifest: testManifest, rootGrown: true},
			map[string]string{
				"kernel":        "fail running 6.1.0-29-cloud-amd64, but the image was built for " + k,
				"nvidia_module": "fail /lib/modules/6.1.0-29-cloud-amd64/updates/dkms/nvidia-current.ko was built for 6.1.0-27-cloud-amd64, but the running kernel is 6.1.0-29-cloud-amd64",
			}},
		{"module named nvidia", fakeGuest{kernel: k, vermagic: k + " SMP mod_unload modversions", rootGrown: true,
			manifest: strings.Replace(testManifest, `"module":"nvidia-current"`, `"module":"nvidia"`, 1)},
			map[string]string{
				"nvidia_module": "ok /lib/modules/" + k + "/updates/dkms/nvidia-current.ko 535.216.01 for " + k,
			}},
		{"no module", fakeGuest{kernel: k, rootGrown: true,
			manifest: strings.Replace(testManifest, `"module":"nvidia-current"`, `"module":"nvidia-open"`, 1)},
			map[string]string{
				"nvidia_module": "fail no module (nvidia-open, nvidia, nvidia-current) in /lib/modules/" + k + " for the running kernel",
			}},
		{"preload", fakeGuest{kernel: k, vermagic: k + " SMP mod_unload", manifest: testManifest, rootGrown: true, preload: "present:1\n"},
			map[string]string{
				"preload": "ok in docker's store: present:1",
			}},
		{"preload missing", fakeGuest{kernel: k, vermagic: k + " SMP mod_unload", manifest: testManifest, rootGrown: true, preload: "present:1\nmissing:2\n"},
			map[string]string{
				"preload": "fail not in docker's store: missing:2 (gpuforge-preload.service: active)",
			}},
		{"no manifest", fakeGuest{kernel: k, rootGrown: true},
			map[string]string{
				"manifest":       "fail /etc/gpuforge/machine-image.json is missing: the image was not built by gpuforge",
				"kernel":         "fail running " + k + "; the manifest names no kernel",
				"docker":         "skip the image has no docker",
				"nvidia_runtime": "skip the image has no NVIDIA container runtime",
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			console := tc.guest.run(t)
			rep, err := ParseConsole(strings.NewReader(console))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, l := range rep.Lines {
				got[l.Key] = l.Status + " " + l.Value
			}
			for k, w := range tc.want {
				if got[k] != w {
					t.Errorf("%s:\n got  %q\n want %q", k, got[k], w)
				}
			}
			failed := false
			for _, l := range rep.Lines {
				failed = failed || l.Status == StatusFail
			}
			if wantVerdict := map[bool]string{false: VerdictPass, true: VerdictFail}[failed]; rep.Verdict != wantVerdict || len(rep.Lines) != 10 {
				t.Errorf("verdict %s (%s) with %d lines; the console:\n%s", rep.Verdict, rep.Reason, len(rep.Lines), console)
			}
		})
	}
}

func TestFindFirmware(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"MY_CODE_4M.fd", "MY_VARS_4M.fd", "LONE_CODE.fd", "combined.fd"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("fw"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fw, err := findFirmware(filepath.Join(dir, "MY_CODE_4M.fd"))
	if err != nil || fw.vars != filepath.Join(dir, "MY_VARS_4M.fd") {
		t.Errorf("code and vars: %+v, %v", fw, err)
	}
	if fw, err := findFirmware(filepath.Join(dir, "combined.fd")); err != nil || fw.vars != "" {
		t.Errorf("combined: %+v, %v", fw, err)
	}
	if _, err := findFirmware(filepath.Join(dir, "LONE_CODE.fd")); err == nil || !strings.Contains(err.Error(), "LONE_VARS.fd") {
		t.Errorf("code without vars: %v", err)
	}
	saved := firmwareCandidates
	t.Cleanup(func() { firmwareCandidates = saved })
	firmwareCandidates = []firmware{{code: filepath.Join(dir, "none.fd")}}
	if _, err := findFirmware(""); err == nil || !strings.Contains(err.Error(), "apt-get install ovmf") {
		t.Errorf("no firmware: %v", err)
	}
}

// requireQEMU returns when QEMU and OVMF are installed, and skips the test otherwise (fails
// it with GPUFORGE_REQUIRE_TOOLS=1).
func requireQEMU(t *testing.T) {
	t.Helper()
	testenv.Tool(t, "qemu-system-x86_64")
	testenv.Tool(t, "qemu-img")
	if _, err := findFirmware(""); err != nil {
		if os.Getenv(testenv.RequireToolsEnv) == "1" {
			t.Fatalf("%v, and %s=1", err, testenv.RequireToolsEnv)
		}
		t.Skip(err)
	}
}

// emptyDisk is a sparse 64 MiB raw disk of zeros: no partition table, nothing to boot.
func emptyDisk(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "empty.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// isolateTemp points Boot's temporary directory at a fresh one, and returns it.
func isolateTemp(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	return tmp
}

// checkCleanedUp fails the test when Boot left files in tmp or a process that uses them.
func checkCleanedUp(t *testing.T, tmp string) {
	t.Helper()
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("Boot left %s in %s", left[0].Name(), tmp)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmdline, err := os.ReadFile(p)
		if err == nil && bytes.Contains(cmdline, []byte(tmp)) {
			t.Errorf("a process still runs with %s: %s", tmp, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
}

// TestBootUnbootableDisk boots a disk with nothing on it: the firmware finds nothing to boot,
// and the check says so as soon as the console shows it, long before the time limit.
func TestBootUnbootableDisk(t *testing.T) {
	requireQEMU(t)
	tmp := isolateTemp(t)
	disk := emptyDisk(t)
	before, _ := os.Stat(disk)
	var console bytes.Buffer
	start := time.Now()
	rep, err := Boot(context.Background(), disk, BootOptions{Timeout: 60 * time.Second, Console: &console})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s in %v: %s (accel %s; %s)", rep.Verdict, took.Round(time.Millisecond), rep.Reason, rep.Accel, rep.AccelNote)
	if rep.Verdict != VerdictFail || !strings.HasPrefix(rep.Reason, "the firmware found nothing to boot") {
		t.Errorf("verdict %s: %q, want fail: the firmware found nothing to boot", rep.Verdict, rep.Reason)
	}
	if took > 45*time.Second {
		t.Errorf("the check took %v: it should stop at the firmware's message, not the time limit", took)
	}
	switch {
	case rep.Accel == "tcg" && rep.AccelNote == "":
		t.Error("accel auto used TCG without saying why not KVM")
	case rep.Accel != "tcg" && rep.Accel != "kvm":
		t.Errorf("accel %q", rep.Accel)
	}
	if !strings.Contains(console.String(), "BdsDxe") {
		t.Errorf("the live console copy has no firmware output:\n%s", console.String())
	}
	after, _ := os.Stat(disk)
	if !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() {
		t.Errorf("the disk changed: %v %d, was %v %d", after.ModTime(), after.Size(), before.ModTime(), before.Size())
	}
	checkCleanedUp(t, tmp)
}

// hangFirmware writes a 64 KiB "firmware" whose reset vector jumps to itself forever: a boot
// that prints nothing and never ends.
func hangFirmware(t *testing.T) string {
	t.Helper()
	b := make([]byte, 64<<10)
	copy(b[0xfff0:], []byte{0xeb, 0xfe}) // jmp $
	path := filepath.Join(t.TempDir(), "hang.fd")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBootTimeLimit checks that a boot that never reports fails at the time limit, with QEMU
// stopped and the temporary files removed.
func TestBootTimeLimit(t *testing.T) {
	requireQEMU(t)
	tmp := isolateTemp(t)
	disk, fw := emptyDisk(t), hangFirmware(t)
	start := time.Now()
	rep, err := Boot(context.Background(), disk, BootOptions{Timeout: 3 * time.Second, Accel: "tcg", Firmware: fw})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if want := "no boot report within 3s (TCG); the console printed nothing"; rep.Verdict != VerdictFail || rep.Reason != want {
		t.Errorf("verdict %s: %q, want fail: %q", rep.Verdict, rep.Reason, want)
	}
	if took < 3*time.Second || took > 3*time.Second+qemuStopGrace+5*time.Second {
		t.Errorf("the check took %v with a 3s limit", took)
	}
	checkCleanedUp(t, tmp)
}

// TestBootCancel checks that cancelling the context stops QEMU and removes the temporary files.
func TestBootCancel(t *testing.T) {
	requireQEMU(t)
	tmp := isolateTemp(t)
	disk, fw := emptyDisk(t), hangFirmware(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rep, err := Boot(ctx, disk, BootOptions{Timeout: time.Minute, Accel: "tcg", Firmware: fw})
	if !errors.Is(err, context.DeadlineExceeded) || rep != nil {
		t.Errorf("Boot returned %v, %v; want the context's error", rep, err)
	}
	checkCleanedUp(t, tmp)
}

func TestBootMissingDisk(t *testing.T) {
	requireQEMU(t)
	missing := filepath.Join(t.TempDir(), "no-such.qcow2")
	_, err := Boot(context.Background(), missing, BootOptions{})
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Boot(%s): %v, want an error naming the disk", missing, err)
	}
	if _, err := Boot(context.Background(), missing, BootOptions{Format: "vmdk"}); err == nil || !strings.Contains(err.Error(), `"vmdk"`) {
		t.Errorf("Format vmdk: %v", err)
	}
}
