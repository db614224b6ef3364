package buildkit

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
	"strings"
	"sync"
	"time"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth/authprovider"
	"github.com/moby/buildkit/util/progress/progressui"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/tonistiigi/fsutil"

	"github.com/gpuforge/gpuforge/recipes"
)

// A machine image's root filesystem is three LLB chains that share their start:
//
//	base ─► kernel ─┬─► host packages, runtimes, driver user space, recipe steps ─► rootfs
//	                └─► headers + DKMS build of the NVIDIA modules ──(the .ko files)─┘
//
// The kernel stage installs the recipe's kernel package and resolves the kernel release it
// boots; the module stage starts from it, so the modules are always built against the image's
// kernel (never the build host's `uname -r`), and it depends on nothing but the base, the kernel
// package and the driver: BuildKit's cache keeps the compiled modules across any other change of
// the recipe, which is the cache by (kernel, driver version, flavor) a DKMS build needs. Only the
// .ko files reach the root filesystem; headers and compilers stay in the module stage.

// MachineImageFile is where the root filesystem describes itself, for the boot check.
const MachineImageFile = "/etc/gpuforge/machine-image.json"

// kernelReleaseFile holds the kernel release (uname -r) the kernel stage installed.
const kernelReleaseFile = "/etc/gpuforge/kernel-release"

// kmodStaging is where the module stage leaves the built modules, as a tree rooted at /.
const kmodStaging = "/gpuforge-kmod"

// Step names of the machine image stages: progress shows them and tests find them in events.
const (
	StepKernel       = "install the kernel"
	StepKernelModule = "build the NVIDIA kernel modules (DKMS) for the image's kernel"
	StepHostSetup    = "configure the host"
)

// hostPackages make a root filesystem a bootable cloud host: init, the UEFI boot loader,
// cloud-init with root partition growth, SSH, networking with DNS.
var hostPackages = []string{
	"systemd-sysv", "udev", "dbus", "kmod", "systemd-boot-efi", "systemd-resolved",
	"cloud-init", "cloud-guest-utils", "openssh-server", "iproute2", "netbase", "ca-certificates", "sudo",
}

// MachineInfo is what a machine image's root filesystem was built with; it is written to
// [MachineImageFile] inside the image.
type MachineInfo struct {
	Schema   string            `json:"schema"`
	Name     string            `json:"name"`
	Kernel   string            `json:"kernel"`
	Driver   *MachineDriver    `json:"driver"`
	Runtimes map[string]string `json:"runtimes"`
}

// MachineDriver is the NVIDIA driver of a machine image.
type MachineDriver struct {
	Module  string `json:"module"`
	Version string `json:"version"`
	Flavor  string `json:"flavor"`
}

// LoweredMachine is a machine image lowered to LLB.
type LoweredMachine struct {
	Address  string
	Image    *recipes.MachineImage
	Platform ocispecs.Platform
	Kernel   llb.State  // base + kernel
	Modules  *llb.State // the module stage (nil without a driver)
	Rootfs   llb.State
}

// LowerMachine lowers a machine image to LLB.
func (l *Lowerer) LowerMachine(ctx context.Context, name string) (*LoweredMachine, error) {
	m := l.recipe.MachineImage(name)
	if m == nil {
		return nil, fmt.Errorf("no machine image %q in the recipe", name)
	}
	if m.Kernel == "" {
		return nil, fmt.Errorf("machine image %s has no kernel", name)
	}
	if m.Disk != nil && m.Disk.Boot != "" && m.Disk.Boot != "uefi" {
		return nil, fmt.Errorf("machine image %s: disk boot %q is not supported by this version; use uefi", name, m.Disk.Boot)
	}
	p := l.defaults[0]
	var base *Base
	if ref := m.From.Ref; ref != nil && ref.Kind == recipes.KindImage {
		parent, err := l.lower(ctx, ref.Name, 1)
		if err != nil {
			return nil, err
		}
		i := indexPlatform(parent.Platforms, p)
		if i < 0 {
			return nil, fmt.Errorf("machine image %s is built for %s, but image %s is not", name, platforms.Format(p), ref.Name)
		}
		base = &Base{State: parent.States[i], Config: parent.Configs[i], Ref: parent.Address}
	} else {
		var err error
		if base, err = l.resolver.ResolveBase(ctx, m.From, p); err != nil {
			return nil, fmt.Errorf("machine image %s: resolving %s: %w", name, m.From, err)
		}
	}
	plat := platforms.Format(p)
	out := &LoweredMachine{Address: recipes.KindMachineImage + "." + name, Image: m, Platform: p}
	aptMounts := func() []llb.RunOption {
		return []llb.RunOption{
			llb.AddEnv("DEBIAN_FRONTEND", "noninteractive"),
			llb.AddMount("/var/cache/apt", llb.Scratch(), llb.AsPersistentCacheDir(cacheID("apt-archives", p), llb.CacheMountLocked)),
			llb.AddMount("/var/lib/apt/lists", llb.Scratch(), llb.AsPersistentCacheDir(cacheID("apt-lists", p), llb.CacheMountLocked)),
		}
	}

	// The kernel stage.
	kernel := base.State.Platform(p).Run(append(aptMounts(),
		llb.Args([]string{"/bin/sh", "-c", kernelScript(m.Kernel)}),
		llb.WithCustomName(fmt.Sprintf("[%s] %s %s", plat, StepKernel, m.Kernel)),
		l.location(m.KernelRange),
	)...).Root()
	out.Kernel = kernel

	// The module stage, with the driver's repository when it is not the distribution's: the
	// DKMS source comes from it, held to the recipe's branch.
	var driverPkgs []string
	var driverRepo *recipes.Repository
	driverPrefs := ""
	if d := m.Driver; d != nil {
		dkms, user, err := driverPackages(d)
		if err != nil {
			return nil, fmt.Errorf("machine image %s: %w", name, err)
		}
		driverPkgs = user
		driverRepo = d.Repository
		if driverRepo == nil && or(d.Source, "distro") == "nvidia" {
			if driverRepo, err = l.nvidiaDriverRepository(m); err != nil {
				return nil, fmt.Errorf("machine image %s: %w", name, err)
			}
		}
		if or(d.Source, "distro") == "nvidia" {
			if driverPrefs, err = NvidiaDriverPreferences(or(d.Version, d.Branch)); err != nil {
				return nil, fmt.Errorf("machine image %s: driver: %w", name, err)
			}
		}
		modBase := kernel
		if driverRepo != nil {
			fa, err := l.aptSources([]*recipes.Repository{driverRepo})
			if err != nil {
				return nil, fmt.Errorf("machine image %s: driver: %w", name, err)
			}
			if driverPrefs != "" {
				fa = fa.Mkdir("/etc/apt/preferences.d", 0o755, llb.WithParents(true)).
					Mkfile("/etc/apt/preferences.d/gpuforge-nvidia-driver", 0o644, []byte(driverPrefs))
			}
			modBase = modBase.File(fa, llb.WithCustomName(fmt.Sprintf("[%s] apt source of the driver: %s", plat, driverRepo.Name)))
		}
		mods := modBase.Run(append(aptMounts(),
			llb.Args([]string{"/bin/sh", "-c", moduleScript(d, dkms)}),
			llb.WithCustomName(fmt.Sprintf("[%s] %s: %s", plat, StepKernelModule, strings.Join(dkms, " "))),
			l.location(d.DeclRange),
		)...).Root()
		out.Modules = &mods
	}

	// The root filesystem: first what makes it a host (boot, cloud-init, SSH, the runtimes and
	// the driver's user space), then the recipe's own steps, each through the same lowering as
	// a container image's. Two steps, so that a change of the recipe's packages reinstalls
	// only those.
	runtimeRepos, runtimePkgs, err := l.runtimePackages(m)
	if err != nil {
		return nil, fmt.Errorf("machine image %s: %w", name, err)
	}
	rootBase := kernel
	if driverPrefs != "" {
		rootBase = rootBase.File(llb.Mkdir("/etc/apt/preferences.d", 0o755, llb.WithParents(true)).
			Mkfile("/etc/apt/preferences.d/gpuforge-nvidia-driver", 0o644, []byte(driverPrefs)),
			llb.WithCustomName(fmt.Sprintf("[%s] hold the NVIDIA driver to branch %s", plat, m.Driver.Branch)))
	}
	hostImg := &recipes.Image{
		Name:         name,
		From:         m.From,
		Repositories: runtimeRepos,
		Packages:     append(append(append([]string{}, hostPackages...), runtimePkgs...), driverPkgs...),
		DeclRange:    m.DeclRange,
	}
	if driverRepo != nil {
		hostImg.Repositories = append(hostImg.Repositories, driverRepo)
	}
	st, _, err := l.steps(hostImg, &Base{State: rootBase, Config: base.Config}, p)
	if err != nil {
		return nil, fmt.Errorf("machine image %s: %w", name, err)
	}
	img := &recipes.Image{
		Name:          name,
		From:          m.From,
		Repositories:  m.Repositories,
		Packages:      m.Packages,
		Env:           m.Env,
		Copies:        m.Copies,
		Run:           m.Run,
		Secrets:       m.Secrets,
		DeclRange:     m.DeclRange,
		PackagesRange: m.PackagesRange,
		RunRange:      m.RunRange,
	}
	if st, _, err = l.steps(img, &Base{State: st, Config: base.Config}, p); err != nil {
		return nil, fmt.Errorf("machine image %s: %w", name, err)
	}
	if out.Modules != nil {
		st = st.File(llb.Copy(*out.Modules, kmodStaging+"/", "/var/lib/gpuforge/kmod/", &llb.CopyInfo{CopyDirContentsOnly: true, CreateDestPath: true}),
			llb.WithCustomName(fmt.Sprintf("[%s] copy the NVIDIA kernel modules", plat)))
	}
	fa := llb.Mkdir("/etc/gpuforge", 0o755, llb.WithParents(true))
	for path, content := range hostFiles(m) {
		fa = fa.Mkdir(filepath.Dir(path), 0o755, llb.WithParents(true)).Mkfile(path, 0o644, []byte(content))
	}
	st = st.File(fa, llb.WithCustomName(fmt.Sprintf("[%s] host configuration files", plat)))
	st = st.Run(
		llb.Args([]string{"/bin/sh", "-c", hostScript(m)}),
		llb.WithCustomName(fmt.Sprintf("[%s] %s", plat, StepHostSetup)),
		l.location(m.DeclRange),
	).Root()
	// DNS through systemd-resolved. Written as a file operation: during a run step BuildKit
	// bind-mounts its own resolv.conf over the image's.
	st = st.File(llb.Rm("/etc/resolv.conf", llb.WithAllowNotFound(true)).
		Symlink("../run/systemd/resolve/stub-resolv.conf", "/etc/resolv.conf"),
		llb.WithCustomName(fmt.Sprintf("[%s] resolv.conf from systemd-resolved", plat)))
	out.Rootfs = st
	return out, nil
}

// kernelScript installs the kernel package and an initramfs generator, and records the kernel
// release the package boots. A metapackage (linux-image-cloud-amd64, linux-aws) is followed
// through its linux-image-* dependencies to the package that ships /boot/vmlinuz-RELEASE.
func kernelScript(pkg string) string {
	return `set -eu
rm -f /etc/apt/apt.conf.d/docker-clean
apt-get update -qq
apt-get install -y -qq --no-install-recommends -o APT::Keep-Downloaded-Packages=true initramfs-tools kmod ` + shellQuote(pkg) + `
release() {
	r=$(dpkg-query -L "$1" 2>/dev/null | sed -n 's|^/boot/vmlinuz-||p' | head -n 1)
	if [ -n "$r" ]; then echo "$r"; return 0; fi
	for d in $(dpkg-query -W -f='${Depends}' "$1" | tr ',|' '\n\n' | sed 's/(.*//; s/:any//; s/ //g' | grep '^linux-image-' || true); do
		if r=$(release "$d") && [ -n "$r" ]; then echo "$r"; return 0; fi
	done
	return 1
}
kver=$(release ` + shellQuote(pkg) + `) || { echo "gpuforge: the kernel package ` + pkg + ` installs no /boot/vmlinuz-*, directly or through its linux-image-* dependencies" >&2; exit 1; }
test -f "/boot/vmlinuz-$kver" || { echo "gpuforge: /boot/vmlinuz-$kver is missing" >&2; exit 1; }
test -f "/boot/initrd.img-$kver" || update-initramfs -c -k "$kver"
mkdir -p /etc/gpuforge
echo "$kver" > ` + kernelReleaseFile + `
echo "gpuforge: kernel $kver"
`
}

// moduleScript installs the kernel headers, DKMS and the driver's DKMS package on the kernel
// stage, builds and installs the modules for the image's kernel explicitly (a package's own
// DKMS hook builds for whatever kernels it finds, and may try the build host's), checks every
// module's vermagic against that kernel, and stages the modules under kmodStaging.
func moduleScript(d *recipes.Driver, dkmsPkgs []string) string {
	flavor := or(d.KernelModule, "proprietary")
	want := d.Version
	if want == "" {
		want = d.Branch
	}
	return `set -eu
kver=$(cat ` + kernelReleaseFile + `)
apt-get update -qq
apt-get install -y -qq --no-install-recommends -o APT::Keep-Downloaded-Packages=true "linux-headers-$kver" dkms ` + shellQuoteAll(dkmsPkgs) + `
found=
for mv in $(dkms status 2>/dev/null | sed -n 's|^\([^/,]*\)/\([^,:]*\)[,:].*|\1/\2|p' | sort -u); do
	case "$mv" in nvidia*) ;; *) continue ;; esac
	mod=${mv%%/*}; ver=${mv#*/}
	case "$ver" in ` + shellQuote(want) + `|` + shellQuote(want) + `.*) ;; *) echo "gpuforge: DKMS module $mod is version $ver, not the driver ` + want + ` the recipe asks for" >&2; exit 1 ;; esac
	dkms status -m "$mod" -v "$ver" -k "$kver" | grep -q installed || dkms install -m "$mod" -v "$ver" -k "$kver"
	found="$mod $ver"
done
[ -n "$found" ] || { echo "gpuforge: ` + strings.Join(dkmsPkgs, " ") + ` added no nvidia DKMS module" >&2; exit 1; }
dir=/lib/modules/$kver/updates/dkms
main=
for ko in "$dir"/nvidia*.ko*; do
	[ -e "$ko" ] || { echo "gpuforge: no NVIDIA module in $dir" >&2; exit 1; }
	vm=$(modinfo -F vermagic "$ko" | cut -d ' ' -f 1)
	if [ "$vm" != "$kver" ]; then echo "gpuforge: $ko has vermagic $vm, not the image's kernel $kver" >&2; exit 1; fi
	n=$(basename "$ko"); n=${n%%.ko*}
	case "$n" in *modeset*|*drm*|*uvm*|*peermem*) ;; *) main=$n ;; esac
	echo "gpuforge: $(basename "$ko") vermagic $vm"
done
mkdir -p ` + kmodStaging + `/lib/modules/$kver/updates/dkms
cp -a "$dir"/. ` + kmodStaging + `/lib/modules/$kver/updates/dkms/
printf '{"module":"%s","version":"%s","flavor":"` + flavor + `"}\n' "$main" "${found#* }" > ` + kmodStaging + `/driver.json
`
}

// driverPackages are the DKMS packages (built in the module stage) and the user-space packages
// (installed in the root filesystem) of a driver block.
func driverPackages(d *recipes.Driver) (dkms, user []string, err error) {
	flavor := or(d.KernelModule, "proprietary")
	if or(d.Source, "distro") == "nvidia" {
		dkms, user = NvidiaDriverPackages(d.Branch, flavor, d.FabricManager)
		return dkms, user, nil
	}
	dkms, user, err = DistroDriverPackages(flavor)
	if err != nil {
		return nil, nil, err
	}
	if d.FabricManager {
		return nil, nil, errors.New("driver: fabric_manager needs source = \"nvidia\": Debian and Ubuntu do not package nvidia-fabricmanager")
	}
	return dkms, user, nil
}

// distroOf guesses the distribution and suite of a machine image's base, for vendor repositories.
func (l *Lowerer) distroOf(m *recipes.MachineImage) (distro, suite string) {
	if ref := m.From.Ref; ref != nil && ref.Kind == recipes.KindBase {
		if b := l.recipe.Base(ref.Name); b != nil {
			if bs := b.Bootstrap; bs != nil {
				return or(bs.Distribution, "debian"), bs.Suite
			}
			return distroFromImage(b.Image)
		}
	}
	return distroFromImage(m.From.Image)
}

func distroFromImage(ref string) (string, string) {
	name, tag, _ := strings.Cut(ref[strings.LastIndex(ref, "/")+1:], ":")
	return name, tag
}

// runtimePackages are the repositories and packages of a machine image's runtimes.
func (l *Lowerer) runtimePackages(m *recipes.MachineImage) (repos []*recipes.Repository, pkgs []string, err error) {
	for _, rt := range m.Runtimes {
		switch rt.Type {
		case "docker":
			if or(rt.Edition, "ce") == "ce" {
				if rt.Repository == nil {
					distro, suite := l.distroOf(m)
					repo, err := DockerCERepository(distro, suite)
					if err != nil {
						return nil, nil, fmt.Errorf("runtime %s: %w", rt.Name, err)
					}
					repos = append(repos, repo)
				}
				pkgs = append(pkgs, pinned("docker-ce", rt.Version), pinned("docker-ce-cli", rt.Version), "containerd.io")
			} else {
				pkgs = append(pkgs, pinned("docker.io", rt.Version))
			}
		case "nvidia":
			if rt.Repository == nil {
				repos = append(repos, NvidiaToolkitRepository())
			}
			pkgs = append(pkgs, pinned("nvidia-container-toolkit", rt.ToolkitVersion), pinned("nvidia-container-toolkit-base", rt.ToolkitVersion))
		}
		if rt.Repository != nil {
			repos = append(repos, rt.Repository)
		}
	}
	return repos, pkgs, nil
}

func (l *Lowerer) nvidiaDriverRepository(m *recipes.MachineImage) (*recipes.Repository, error) {
	distro, suite := l.distroOf(m)
	version, err := NvidiaCUDARelease(distro, suite)
	if err != nil {
		return nil, fmt.Errorf("driver: %w", err)
	}
	return NvidiaCUDARepository(distro, version, l.defaults[0].Architecture)
}

// pinned is an apt package with an optional version: "pkg=1.2.3-1", "pkg=1.17.*".
func pinned(pkg, version string) string {
	if version == "" {
		return pkg
	}
	return pkg + "=" + version
}

// hostFiles are the files every machine image gets, by path.
func hostFiles(m *recipes.MachineImage) map[string]string {
	files := map[string]string{
		// Every ethernet interface by DHCP (the names differ between QEMU, EC2 and bare metal).
		"/etc/systemd/network/80-gpuforge-dhcp.network": "[Match]\nType=ether\nName=en* eth*\n\n[Network]\nDHCP=yes\n\n[DHCPv4]\nUseDomains=yes\n",
		// cloud-init: networkd renders nothing (the file above does), the root partition and
		// filesystem grow on first boot, host keys are made per instance.
		"/etc/cloud/cloud.cfg.d/90-gpuforge.cfg": `# gpuforge: machine image defaults
network:
  config: disabled
growpart:
  mode: auto
  devices: ["/"]
resize_rootfs: true
# The image has no locales package: keep glibc's built-in C.UTF-8 rather than fail generating one.
locale: false
ssh_deletekeys: true
ssh_genkeytypes: [rsa, ecdsa, ed25519]
`,
		// Host keys for an instance booted without cloud-init's datasource: made once, before sshd.
		"/etc/systemd/system/gpuforge-ssh-hostkeys.service": `[Unit]
Description=Generate SSH host keys (gpuforge)
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
`,
	}
	var nvidia *recipes.Runtime
	docker := false
	for _, rt := range m.Runtimes {
		switch rt.Type {
		case "nvidia":
			nvidia = rt
		case "docker":
			docker = true
		}
	}
	if nvidia != nil {
		// The CDI spec describes the driver of the booted host: generated at boot once the
		// driver is loaded, never on the build host.
		files["/etc/systemd/system/gpuforge-nvidia-cdi.service"] = `[Unit]
Description=Generate the NVIDIA CDI spec for this host's driver (gpuforge)
After=systemd-modules-load.service nvidia-persistenced.service
Before=docker.service containerd.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'if ! /sbin/modprobe nvidia 2>/dev/null; then echo "no NVIDIA GPU or driver: no CDI spec"; exit 0; fi; mkdir -p /var/run/cdi; exec /usr/bin/nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml'
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
`
		// GPUs lost from containers after `systemctl daemon-reload` (NVIDIA container toolkit
		// issue 48): systemd needs /dev/char symlinks for the NVIDIA device nodes.
		files["/etc/udev/rules.d/71-gpuforge-nvidia-dev-char.rules"] = `ACTION=="add", DEVPATH=="/bus/pci/drivers/nvidia", RUN+="/usr/bin/nvidia-ctk system create-dev-char-symlinks --create-all"
`
		if docker {
			// Docker 25 and later resolve CDI devices themselves; older ones (Debian bookworm's
			// 20.10) refuse daemon.json keys they do not know, so the host step picks one.
			files["/etc/gpuforge/docker-daemon.json"] = dockerDaemonJSON(nvidia, false)
			files["/etc/gpuforge/docker-daemon-cdi.json"] = dockerDaemonJSON(nvidia, true)
		}
	}
	return files
}

// dockerDaemonJSON registers the NVIDIA runtime with docker (the default runtime when asked),
// and with dockerCDI docker's own CDI (docker ≥ 25 resolves --device nvidia.com/gpu=all).
func dockerDaemonJSON(rt *recipes.Runtime, dockerCDI bool) string {
	cfg := map[string]any{}
	if or(rt.Mode, "cdi") == "cdi" && dockerCDI {
		cfg["features"] = map[string]any{"cdi": true}
		cfg["cdi-spec-dirs"] = []string{"/etc/cdi", "/var/run/cdi"}
	}
	cfg["runtimes"] = map[string]any{"nvidia": map[string]any{"path": "nvidia-container-runtime", "args": []string{}}}
	if rt.DefaultRuntime != nil && *rt.DefaultRuntime {
		cfg["default-runtime"] = "nvidia"
	}
	data, _ := json.MarshalIndent(cfg, "", "  ")
	return string(data) + "\n"
}

// hostScript finishes a machine image's root filesystem: the modules of the module stage, the
// services a GPU host runs, the image's description, and the per-instance state left empty.
func hostScript(m *recipes.MachineImage) string {
	var b strings.Builder
	b.WriteString(`set -eu
kver=$(cat ` + kernelReleaseFile + `)
driver=null
if [ -d /var/lib/gpuforge/kmod ]; then
	cp -a /var/lib/gpuforge/kmod/lib/modules/. /lib/modules/
	driver=$(cat /var/lib/gpuforge/kmod/driver.json)
	rm -rf /var/lib/gpuforge/kmod
fi
depmod -a "$kver"
systemctl enable systemd-networkd systemd-resolved ssh gpuforge-ssh-hostkeys.service
systemctl enable cloud-init-local.service cloud-init.service cloud-config.service cloud-final.service 2>/dev/null || true
`)
	docker, nvidia := "", ""
	for _, rt := range m.Runtimes {
		switch rt.Type {
		case "docker":
			docker = or(rt.Edition, "ce")
			b.WriteString("systemctl enable docker.service containerd.service\n")
		case "nvidia":
			nvidia = or(rt.Mode, "cdi")
			b.WriteString(`mkdir -p /etc/cdi /var/run/cdi /etc/nvidia-container-runtime
systemctl enable gpuforge-nvidia-cdi.service
[ -f /etc/nvidia-container-runtime/config.toml ] || nvidia-ctk --quiet config default --output=/etc/nvidia-container-runtime/config.toml
`)
			if nvidia == "cdi" {
				b.WriteString("nvidia-ctk --quiet config --in-place --set nvidia-container-runtime.mode=cdi\n")
			}
		}
	}
	if docker != "" && nvidia != "" {
		b.WriteString(`daemon=/etc/gpuforge/docker-daemon.json
dv=$(dockerd --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
if [ "${dv:-0}" -ge 25 ]; then daemon=/etc/gpuforge/docker-daemon-cdi.json; fi
mkdir -p /etc/docker
cp "$daemon" /etc/docker/daemon.json
rm -f /etc/gpuforge/docker-daemon.json /etc/gpuforge/docker-daemon-cdi.json
echo "gpuforge: docker ${dv:-?}: $(basename "$daemon")"
`)
	}
	if d := m.Driver; d != nil {
		if d.Persistenced == nil || *d.Persistenced {
			b.WriteString("systemctl enable nvidia-persistenced.service\n")
		}
		if d.FabricManager {
			b.WriteString("systemctl enable nvidia-fabricmanager.service\n")
		}
		// GSP firmware: the open modules need it; the proprietary ones use it on Turing and later.
		b.WriteString(`ls /lib/firmware/nvidia/*/gsp*.bin >/dev/null 2>&1 || echo "gpuforge: warning: no GSP firmware under /lib/firmware/nvidia" >&2
`)
	}
	fmt.Fprintf(&b, `printf '{"schema":"gpuforge.machine-image/v1","name":"%%s","kernel":"%%s","driver":%%s,"runtimes":{"docker":"%%s","nvidia":"%%s"}}\n' %s "$kver" "$driver" %s %s > %s
`, shellQuote(m.Name), shellQuote(docker), shellQuote(nvidia), MachineImageFile)
	// Per-instance state: an empty machine-id makes systemd treat the first boot as such and
	// generate one; host keys are made on first boot (cloud-init, or the unit above).
	b.WriteString(`: > /etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
rm -rf /var/lib/cloud/instances /var/lib/cloud/instance /var/log/cloud-init*.log
rm -f /etc/hostname
echo "gpuforge: host configured for kernel $kver"
`)
	return b.String()
}

func shellQuote(s string) string {
	return shellQuoteAll([]string{s})
}

// MachineResult is a machine image's root filesystem, built and exported to a directory.
type MachineResult struct {
	Address  string
	Dir      string // the root filesystem tree
	Info     MachineInfo
	Steps    []Step
	Duration time.Duration
}

// BuildMachineRootfs builds the root filesystem of machine image name and exports it to dir
// (which must not exist or be empty). The progress and options are those of [Build].
func BuildMachineRootfs(ctx context.Context, c *client.Client, r *recipes.Recipe, name, dir string, opts ...BuildOption) (*MachineResult, error) {
	o := newBuildOptions(opts)
	m := r.MachineImage(name)
	if m == nil {
		return nil, fmt.Errorf("no machine image %q in the recipe", name)
	}
	boots, err := bootstrapSources(ctx, r, []recipes.Source{m.From}, o)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	start := time.Now()
	logs := newVertexLogs()
	ch := make(chan *client.SolveStatus)
	var displayErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if o.progress == nil {
			for s := range ch {
				logs.record(s)
			}
			return
		}
		d, err := progressui.NewDisplay(o.progress, o.mode)
		if err != nil {
			displayErr = err
			for s := range ch {
				logs.record(s)
			}
			return
		}
		fwd := make(chan *client.SolveStatus)
		go func() {
			defer close(fwd)
			for s := range ch {
				logs.record(s)
				fwd <- s
			}
		}()
		_, displayErr = d.UpdateFrom(context.WithoutCancel(ctx), fwd)
		for range fwd {
		}
	}()

	buildFunc := func(ctx context.Context, gw gwclient.Client) (*gwclient.Result, error) {
		l := NewLowerer(r, &gatewayResolver{gw: gw, r: r, boots: boots}, o.epoch, o.platform)
		low, err := l.LowerMachine(ctx, name)
		if err != nil {
			return nil, err
		}
		def, err := low.Rootfs.Marshal(ctx, llb.Platform(low.Platform))
		if err != nil {
			return nil, err
		}
		return gw.Solve(ctx, gwclient.SolveRequest{Definition: def.ToPB(), Evaluate: true})
	}
	secrets, stores, fs, err := solveInputs(r, &recipes.Image{Name: name, Secrets: m.Secrets}, boots, o.env)
	if err != nil {
		close(ch)
		wg.Wait()
		return nil, err
	}
	att := []session.Attachable{secrets,
		authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{AuthConfigProvider: authFromKeychain(o.keychain)})}
	// The tree comes as a tar stream unpacked by GNU tar as it arrives: BuildKit's local
	// exporter deadlocks on trees of many files (moby/buildkit#2950; a root filesystem has
	// tens of thousands), its tar exporter does not, and tar keeps owners, modes, xattrs,
	// hard links and device nodes as mkfs.ext4 -d needs them.
	untar, err := startUntar(ctx, dir)
	if err != nil {
		close(ch)
		wg.Wait()
		return nil, err
	}
	solveOpt := client.SolveOpt{
		Exports: []client.ExportEntry{{Type: client.ExporterTar, Output: func(map[string]string) (io.WriteCloser, error) {
			return untar.stdin, nil
		}}},
		LocalMounts: map[string]fsutil.FS{RecipeContext: fs},
		OCIStores:   stores,
		Session:     att,
	}
	_, err = c.Build(ctx, solveOpt, "gpuforge", buildFunc, ch)
	wg.Wait()
	untarErr := untar.wait()
	if err != nil {
		return nil, logs.explain(recipes.KindMachineImage+"."+name, err)
	}
	if untarErr != nil {
		return nil, fmt.Errorf("%s: unpacking the root filesystem into %s: %w", recipes.KindMachineImage+"."+name, dir, untarErr)
	}
	res := &MachineResult{Address: recipes.KindMachineImage + "." + name, Dir: dir, Steps: logs.steps(), Duration: time.Since(start)}
	data, err := os.ReadFile(filepath.Join(dir, MachineImageFile))
	if err != nil {
		return nil, fmt.Errorf("%s: the root filesystem has no %s: %w", res.Address, MachineImageFile, err)
	}
	if err := json.Unmarshal(data, &res.Info); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", res.Address, MachineImageFile, err)
	}
	if displayErr != nil && !errors.Is(displayErr, context.Canceled) {
		return res, fmt.Errorf("progress display: %w", displayErr)
	}
	return res, nil
}

// untarProc is GNU tar unpacking a stream into a directory.
type untarProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *bytes.Buffer
}

func startUntar(ctx context.Context, dir string) (*untarProc, error) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		return nil, fmt.Errorf("GNU tar is needed to unpack a machine image's root filesystem: %w", err)
	}
	cmd := exec.CommandContext(ctx, tarBin, "--extract", "--file=-", "--directory="+dir,
		"--preserve-permissions", "--same-owner", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting tar: %w", err)
	}
	return &untarProc{cmd: cmd, stdin: stdin, stderr: &stderr}, nil
}

// wait closes tar's input (in case the export never opened it) and waits for tar.
func (u *untarProc) wait() error {
	u.stdin.Close()
	if err := u.cmd.Wait(); err != nil {
		return fmt.Errorf("tar: %v: %s", err, strings.TrimSpace(u.stderr.String()))
	}
	return nil
}
