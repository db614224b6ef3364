package buildkit

import (
	_ "embed"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gpuforge/gpuforge/recipes"
)

// The vendor apt repositories a machine image installs from: Docker's (docker-ce), NVIDIA's
// libnvidia-container (the container toolkit) and NVIDIA's CUDA repositories (the driver). Each
// is a *recipes.Repository, so it is written to the image exactly as a recipe's repository {}
// block is (the key to /etc/apt/keyrings/gpuforge-NAME.asc, one `deb [signed-by=…]` line).
//
// The signing keys are embedded byte for byte as the vendors publish them: a build never
// downloads a key, and a key the vendor rotates fails apt's signature check loudly instead of
// being trusted on first use. Each file's SHA-256 and primary key fingerprint are recorded next
// to it below and checked by TestVendorKeys.

// dockerKey is Docker's release key, published at https://download.docker.com/linux/debian/gpg
// and, the same file, https://download.docker.com/linux/ubuntu/gpg.
//
//	pub rsa4096 2017-02-22 [SCEA] 9DC8 5822 9FC7 DD38 854A  E2D8 8D81 803C 0EBF CD88
//	uid Docker Release (CE deb) <docker@docker.com>
//	sub rsa4096 2017-02-22 [S]    D330 6A01 8370 199E 527A  E799 7EA0 A9C3 F273 FCD8
//	3817 bytes, SHA-256 1500c1f56fa9e26b9b8f42452a553675796ade0807cdce11975eb98170b3a570
//
// Taken from a copy committed verbatim in a public repository (a Chef cookbook that inlines the
// file it downloaded from download.docker.com/linux/ubuntu/gpg); the SHA-256 is the one that
// many independent projects pin for the downloaded file.
//
//go:embed keys/docker.asc
var dockerKey string

// nvidiaToolkitKey is NVIDIA's key for the libnvidia-container repositories (the container
// toolkit), published at https://nvidia.github.io/libnvidia-container/gpgkey. The repository's
// Release files are signed by the primary key; the signing subkey expired in 2021 and is still
// in the published file.
//
//	pub rsa4096 2017-09-28 [SCE] C95B 321B 61E8 8C18 09C4  F759 DDCA E044 F796 ECB0
//	uid NVIDIA CORPORATION (Open Source Projects) <cudatools@nvidia.com>
//	sub rsa2048 2019-09-18 [S] [expired: 2021-06-16]
//	3195 bytes, SHA-256 c880576d6cf75a48e5027a871bac70fd0421ab07d2b55f30877b21f1c87959c9
//
// Taken from a copy committed verbatim in a public repository; the SHA-256 is the one that
// independent projects pin for the file downloaded from nvidia.github.io (2025-2026).
//
//go:embed keys/nvidia-container-toolkit.asc
var nvidiaToolkitKey string

// nvidiaCUDAKey is the key of NVIDIA's CUDA repositories up to Debian 12 and Ubuntu 24.04
// (3bf863cc.pub in each repository, and in the cuda-keyring package), published at
// https://developer.download.nvidia.com/compute/cuda/repos/DISTRO/ARCH/3bf863cc.pub. Its
// self-signature is SHA-1: fine for gpgv (the apt of bookworm, jammy and noble), refused by the
// sqv of newer apt, which is why NVIDIA signs the Debian 13 repository with another key.
//
//	pub rsa4096 2022-04-14 [SC] EB69 3B30 35CD 5710 E231  E123 A4B4 6996 3BF8 63CC
//	uid cudatools <cudatools@nvidia.com>
//	1650 bytes, SHA-256 7eb71103e32e813ea3e1c06bdb01b143f36feb8d83ecac2b0c11c9273f9e6822
//
// Taken from pardus/pardus-nvidia-installer (nvidia.pub, commit cc51244f, its first key block);
// the SHA-256 is the one an independent project pins for ubuntu2404/ARCH/3bf863cc.pub.
//
//go:embed keys/nvidia-cuda-3bf863cc.asc
var nvidiaCUDAKey string

// nvidiaCUDADebian13Key is the key of NVIDIA's CUDA repository for Debian 13, published at
// https://developer.download.nvidia.com/compute/cuda/repos/debian13/ARCH/8793F200.pub.
//
//	pub rsa4096 2025-08-15 [SCEA] 0218 2E60 104F CDC2 6EAE  1B85 97A5 D4CB 8793 F200
//	uid Kitmaker (Debian 13 Trixie) <kitmaker@nvidia.com>
//	1656 bytes, SHA-256 09edb5196bca272c091633d4e04dd6c8f3a07278834868220aa669c895f6cfd7
//
// Taken from GraeWolf/tekne (spike/phase11/files/nvidia/nvidia.pub, commit 1bf9e27d, whose
// SHA256SUMS pins it), identical to the second key block of pardus/pardus-nvidia-installer's
// nvidia.pub.
//
//go:embed keys/nvidia-cuda-8793f200.asc
var nvidiaCUDADebian13Key string

// Names of the vendor repositories: the image gets /etc/apt/keyrings/gpuforge-NAME.asc and
// /etc/apt/sources.list.d/gpuforge-NAME.list.
const (
	DockerCERepositoryName      = "docker-ce"
	NvidiaToolkitRepositoryName = "nvidia-container-toolkit"
	NvidiaCUDARepositoryName    = "nvidia-cuda"
)

// UnsupportedError is the error of a vendor repository or driver package set asked for a
// distribution, release, architecture or flavor that gpuforge does not support.
type UnsupportedError struct {
	What      string   // what was asked for: "Docker CE distribution", "CUDA repository architecture", …
	Value     string   // the value asked for
	Supported []string // the values gpuforge supports
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("unsupported %s %q: gpuforge supports %s", e.What, e.Value, strings.Join(e.Supported, ", "))
}

// dockerSuites are the releases Docker's repositories serve that gpuforge builds, by distribution.
var dockerSuites = map[string][]string{
	"debian": {"bookworm", "trixie"},
	"ubuntu": {"jammy", "noble"},
}

// DockerCERepository is Docker's apt repository for docker-ce (docker-ce, docker-ce-cli,
// containerd.io, the buildx and compose plugins) on the distribution ("debian" or "ubuntu") and
// suite (its codename: bookworm, trixie, jammy, noble), with Docker's release key:
//
//	deb [signed-by=…] https://download.docker.com/linux/debian bookworm stable
func DockerCERepository(distro, suite string) (*recipes.Repository, error) {
	suites, ok := dockerSuites[distro]
	if !ok {
		return nil, &UnsupportedError{What: "Docker CE distribution", Value: distro, Supported: []string{"debian", "ubuntu"}}
	}
	if !slices.Contains(suites, suite) {
		return nil, &UnsupportedError{What: "Docker CE suite for " + distro, Value: suite, Supported: slices.Clone(suites)}
	}
	return &recipes.Repository{
		Name:       DockerCERepositoryName,
		URL:        "https://download.docker.com/linux/" + distro,
		Suite:      suite,
		Components: []string{"stable"},
		Key:        dockerKey,
	}, nil
}

// NvidiaToolkitRepository is NVIDIA's libnvidia-container repository, the one NVIDIA's
// nvidia-container-toolkit.list names: stable/deb, a flat repository per architecture ($(ARCH),
// which apt replaces), the same for every Debian and Ubuntu release:
//
//	deb [signed-by=…] https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /
func NvidiaToolkitRepository() *recipes.Repository {
	return &recipes.Repository{
		Name:  NvidiaToolkitRepositoryName,
		URL:   "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)",
		Suite: "/",
		Key:   nvidiaToolkitKey,
	}
}

// cudaReleases are the CUDA repository releases gpuforge supports, with the key that signs each.
var cudaReleases = []struct {
	distro, version, suite string
	key                    *string
}{
	{"debian", "debian12", "bookworm", &nvidiaCUDAKey},
	{"debian", "debian13", "trixie", &nvidiaCUDADebian13Key},
	{"ubuntu", "ubuntu2204", "jammy", &nvidiaCUDAKey},
	{"ubuntu", "ubuntu2404", "noble", &nvidiaCUDAKey},
}

// cudaArches maps Debian architectures to the CUDA repositories' directory names.
var cudaArches = map[string]string{"amd64": "x86_64", "arm64": "sbsa"}

// NvidiaCUDARelease is the CUDA repository release (debian12, ubuntu2404, …) of a
// distribution's suite (bookworm, noble, …).
func NvidiaCUDARelease(distro, suite string) (string, error) {
	var supported []string
	for _, r := range cudaReleases {
		if r.distro == distro && r.suite == suite {
			return r.version, nil
		}
		supported = append(supported, r.distro+" "+r.suite)
	}
	return "", &UnsupportedError{What: "distribution release for NVIDIA's CUDA repository", Value: strings.TrimSpace(distro + " " + suite), Supported: supported}
}

// NvidiaCUDARepository is NVIDIA's CUDA repository for the distribution ("debian" or "ubuntu"),
// release (debian12, debian13, ubuntu2204, ubuntu2404) and Debian architecture (amd64, served
// from x86_64/; arm64, served from sbsa/, the server ARM repository), with the key that signs
// it. Besides CUDA it carries NVIDIA's driver packages (see [NvidiaDriverPackages]). A flat
// repository, restricted to the architecture:
//
//	deb [signed-by=… arch=amd64] https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/ /
func NvidiaCUDARepository(distro, version, arch string) (*recipes.Repository, error) {
	if distro != "debian" && distro != "ubuntu" {
		return nil, &UnsupportedError{What: "distribution for NVIDIA's CUDA repository", Value: distro, Supported: []string{"debian", "ubuntu"}}
	}
	var key *string
	var supported []string
	for _, r := range cudaReleases {
		if r.distro != distro {
			continue
		}
		supported = append(supported, r.version)
		if r.version == version {
			key = r.key
		}
	}
	if key == nil {
		return nil, &UnsupportedError{What: "CUDA repository release for " + distro, Value: version, Supported: supported}
	}
	dir, ok := cudaArches[arch]
	if !ok {
		return nil, &UnsupportedError{What: "CUDA repository architecture", Value: arch, Supported: []string{"amd64 (x86_64)", "arm64 (sbsa)"}}
	}
	return &recipes.Repository{
		Name:          NvidiaCUDARepositoryName,
		URL:           "https://developer.download.nvidia.com/compute/cuda/repos/" + version + "/" + dir + "/",
		Suite:         "/",
		Architectures: []string{arch},
		Key:           *key,
	}, nil
}

// driverBranch matches a driver branch ("570") or full version ("570.133.20").
var driverBranch = regexp.MustCompile(`^(\d{3})(\.\d+){0,2}$`)

// NvidiaDriverPackages returns the packages that install a headless driver from NVIDIA's CUDA
// repository for Debian (debian12, debian13), which reuses Debian's package names, for a branch
// ("570", or a full version "570.133.20") and kernel module flavor ("open", the default, or
// "proprietary"): dkms is the kernel module source, built in a stage of its own against the
// image's kernel; userspace is what the booted host runs (nvidia-smi, NVML, libcuda, the
// persistence daemon, the GSP firmware, the modprobe configuration), plus NVIDIA Fabric Manager
// when fabricManager is set (NVSwitch systems: HGX A100/H100/H200). Fabric Manager's package
// carries the branch in its name before 580 (nvidia-fabricmanager-570) and not from 580 on.
//
// The names select no version: NVIDIA's repository serves every branch, so install them with
// [NvidiaDriverPreferences] in /etc/apt/preferences.d, in both stages, to get the branch asked.
// NVIDIA's Ubuntu repositories name their packages differently (nvidia-dkms-570-open, …) and are
// not covered.
func NvidiaDriverPackages(branch, flavor string, fabricManager bool) (dkms, userspace []string) {
	if flavor == "proprietary" {
		dkms = []string{"nvidia-kernel-dkms"}
	} else {
		dkms = []string{"nvidia-kernel-open-dkms"}
	}
	userspace = []string{
		"nvidia-kernel-support", "nvidia-modprobe", "firmware-nvidia-gsp",
		"nvidia-smi", "libnvidia-ml1", "libcuda1", "nvidia-persistenced",
	}
	if fabricManager {
		userspace = append(userspace, nvidiaFabricManagerPackage(branch))
	}
	return dkms, userspace
}

// nvidiaFabricManagerPackage is the Fabric Manager package of a driver branch.
func nvidiaFabricManagerPackage(branch string) string {
	m := driverBranch.FindStringSubmatch(branch)
	if m == nil {
		return "nvidia-fabricmanager"
	}
	if n, _ := strconv.Atoi(m[1]); n < 580 {
		return "nvidia-fabricmanager-" + m[1]
	}
	return "nvidia-fabricmanager"
}

// NvidiaDriverPreferences is an apt preferences file (for /etc/apt/preferences.d) that holds
// NVIDIA's driver packages to a branch ("570": every 570.x) or an exact version ("570.133.20"):
// priority 1001 for their versions of the branch, so apt takes them over newer branches from
// NVIDIA's repository and over the distribution's own, in the same transaction that installs
// them. Other versions keep their usual priority, so packages named alike that are not the
// driver's (nvidia-container-toolkit) are unaffected.
func NvidiaDriverPreferences(branch string) (string, error) {
	m := driverBranch.FindStringSubmatch(branch)
	if m == nil {
		return "", &UnsupportedError{What: "NVIDIA driver branch", Value: branch, Supported: []string{`a branch such as "570"`, `a version such as "570.133.20"`}}
	}
	version := m[1] + ".*"
	if branch != m[1] {
		version = branch + "-*"
	}
	return "# gpuforge: the NVIDIA driver " + branch + "\n" +
		"Package: nvidia-* libnvidia-* libcuda* libnvcuvid* libnvoptix* firmware-nvidia-gsp* xserver-xorg-video-nvidia*\n" +
		"Pin: version " + version + "\n" +
		"Pin-Priority: 1001\n", nil
}

// DebianDriverComponents are the archive components Debian's driver packages come from:
// nvidia-open-kernel-dkms, nvidia-persistenced and nvidia-modprobe are in contrib, the rest of
// the driver in non-free, the GSP firmware in non-free-firmware.
var DebianDriverComponents = []string{"main", "contrib", "non-free", "non-free-firmware"}

// DistroDriverPackages returns the packages that install a headless driver from Debian's own
// archive (bookworm: 535; trixie: 550), for a kernel module flavor ("open", the default, or
// "proprietary"), split like [NvidiaDriverPackages]: dkms is the kernel module source
// (nvidia-kernel-dkms, or nvidia-open-kernel-dkms), userspace what the host runs, with the
// kernel support package of the same flavor (nvidia-kernel-support, or
// nvidia-open-kernel-support). The image's sources need [DebianDriverComponents]. Debian
// packages no Fabric Manager. These are Debian's names; Ubuntu's own driver packages are named
// by branch (nvidia-headless-570-server) and are not covered.
func DistroDriverPackages(flavor string) (dkms, userspace []string, err error) {
	var support string
	switch flavor {
	case "", "open":
		dkms, support = []string{"nvidia-open-kernel-dkms"}, "nvidia-open-kernel-support"
	case "proprietary":
		dkms, support = []string{"nvidia-kernel-dkms"}, "nvidia-kernel-support"
	default:
		return nil, nil, &UnsupportedError{What: "kernel module flavor", Value: flavor, Supported: []string{"open", "proprietary"}}
	}
	userspace = []string{
		support, "nvidia-modprobe", "firmware-nvidia-gsp",
		"nvidia-smi", "libnvidia-ml1", "libcuda1", "nvidia-persistenced",
	}
	return dkms, userspace, nil
}
