package buildkit

import (
	"bufio"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gpuforge/gpuforge/recipes"
)

// vendorKeys are the embedded keys with what the vendors publish: each file's size and SHA-256,
// and its primary key's fingerprint.
var vendorKeys = []struct {
	name, file, armored string
	size                int
	sha256, fingerprint string
}{
	{"docker", "keys/docker.asc", dockerKey, 3817,
		"1500c1f56fa9e26b9b8f42452a553675796ade0807cdce11975eb98170b3a570", "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"},
	{"nvidia-container-toolkit", "keys/nvidia-container-toolkit.asc", nvidiaToolkitKey, 3195,
		"c880576d6cf75a48e5027a871bac70fd0421ab07d2b55f30877b21f1c87959c9", "C95B321B61E88C1809C4F759DDCAE044F796ECB0"},
	{"nvidia-cuda (3bf863cc)", "keys/nvidia-cuda-3bf863cc.asc", nvidiaCUDAKey, 1650,
		"7eb71103e32e813ea3e1c06bdb01b143f36feb8d83ecac2b0c11c9273f9e6822", "EB693B3035CD5710E231E123A4B469963BF863CC"},
	{"nvidia-cuda debian13 (8793f200)", "keys/nvidia-cuda-8793f200.asc", nvidiaCUDADebian13Key, 1656,
		"09edb5196bca272c091633d4e04dd6c8f3a07278834868220aa669c895f6cfd7", "02182E60104FCDC26EAE1B8597A5D4CB8793F200"},
}

// TestVendorKeys checks each embedded key byte for byte against what the vendor publishes (size
// and SHA-256), its armor checksum, and its primary key fingerprint: computed here, and by gpg
// when it is installed.
func TestVendorKeys(t *testing.T) {
	for _, k := range vendorKeys {
		t.Run(k.name, func(t *testing.T) {
			data, err := os.ReadFile(k.file)
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != k.armored {
				t.Fatalf("the embedded key differs from %s", k.file)
			}
			if len(data) != k.size {
				t.Errorf("%s is %d bytes, want %d", k.file, len(data), k.size)
			}
			if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != k.sha256 {
				t.Errorf("%s has SHA-256 %x, want %s", k.file, sum, k.sha256)
			}
			fpr, err := armoredFingerprint(k.armored)
			if err != nil {
				t.Fatalf("%s: %v", k.file, err)
			}
			if fpr != k.fingerprint {
				t.Errorf("%s: primary key fingerprint %s, want %s", k.file, fpr, k.fingerprint)
			}
			t.Run("gpg", func(t *testing.T) {
				if got := gpgFingerprints(t, k.file); !cmp.Equal(got, []string{k.fingerprint}) {
					t.Errorf("gpg --show-keys %s: primary key fingerprints %v, want [%s]", k.file, got, k.fingerprint)
				}
			})
		})
	}
}

// gpgFingerprints are the primary key fingerprints gpg shows for a key file. Without gpg the
// test is skipped, or fails when GPUFORGE_REQUIRE_TOOLS=1 (as testenv.Tool does; testenv
// imports this package, so this test cannot import it).
func gpgFingerprints(t *testing.T, file string) []string {
	t.Helper()
	gpg, err := exec.LookPath("gpg")
	if err != nil {
		if os.Getenv("GPUFORGE_REQUIRE_TOOLS") == "1" {
			t.Fatalf("gpg is not on PATH and GPUFORGE_REQUIRE_TOOLS=1: install gnupg")
		}
		t.Skip("gpg is not on PATH")
	}
	// A home of its own: the test reads no keyring of the user's and writes none.
	home, err := os.MkdirTemp("", "gpuforge-gpg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	cmd := exec.Command(gpg, "--batch", "--no-tty", "--with-colons", "--with-fingerprint", "--show-keys", file)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gpg --show-keys %s: %v\n%s", file, err, out)
	}
	var fprs []string
	primary := false
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		switch {
		case f[0] == "pub":
			primary = true
		case f[0] == "sub":
			primary = false
		case f[0] == "fpr" && primary && len(f) > 9:
			fprs = append(fprs, f[9])
			primary = false
		}
	}
	return fprs
}

// armoredFingerprint decodes an ASCII-armored public key (checking the armor's CRC-24) and
// returns the v4 fingerprint of its first packet, the primary key, as gpg prints it.
func armoredFingerprint(armored string) (string, error) {
	lines := strings.Split(strings.TrimRight(armored, "\n"), "\n")
	if len(lines) < 3 || lines[0] != "-----BEGIN PGP PUBLIC KEY BLOCK-----" || lines[len(lines)-1] != "-----END PGP PUBLIC KEY BLOCK-----" {
		return "", errors.New("not one ASCII-armored public key block")
	}
	i := 1
	for i < len(lines) && lines[i] != "" { // armor headers (Version: …) end at a blank line
		i++
	}
	var b64, crc string
	for _, l := range lines[i+1 : len(lines)-1] {
		if strings.HasPrefix(l, "=") {
			crc = l[1:]
			continue
		}
		b64 += l
	}
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", fmt.Errorf("armor: %w", err)
	}
	want, err := base64.StdEncoding.DecodeString(crc)
	if err != nil || len(want) != 3 {
		return "", fmt.Errorf("armor checksum %q", crc)
	}
	if got := crc24(data); got != uint32(want[0])<<16|uint32(want[1])<<8|uint32(want[2]) {
		return "", fmt.Errorf("armor checksum mismatch: %06X, want %X", got, want)
	}
	if len(data) < 3 {
		return "", errors.New("no packet")
	}
	var body []byte
	switch tag := data[0]; {
	case tag == 0x99: // old format, public key (6), two-octet length
		n := int(data[1])<<8 | int(data[2])
		if len(data) < 3+n {
			return "", errors.New("short public key packet")
		}
		body = data[3 : 3+n]
	case tag == 0xC6 && data[1] >= 192 && data[1] < 224: // new format, two-octet length
		n := (int(data[1])-192)<<8 + int(data[2]) + 192
		if len(data) < 3+n {
			return "", errors.New("short public key packet")
		}
		body = data[3 : 3+n]
	default:
		return "", fmt.Errorf("first packet (tag byte %#x) is not a public key", tag)
	}
	if body[0] != 4 {
		return "", fmt.Errorf("public key version %d, want 4", body[0])
	}
	h := sha1.New()
	h.Write([]byte{0x99, byte(len(body) >> 8), byte(len(body))})
	h.Write(body)
	return strings.ToUpper(hex.EncodeToString(h.Sum(nil))), nil
}

// crc24 is the OpenPGP armor checksum (RFC 4880, 6.1).
func crc24(data []byte) uint32 {
	crc := uint32(0xB704CE)
	for _, b := range data {
		crc ^= uint32(b) << 16
		for range 8 {
			crc <<= 1
			if crc&0x1000000 != 0 {
				crc ^= 0x1864CFB
			}
		}
	}
	return crc & 0xFFFFFF
}

// TestVendorKeyFingerprintRejectsCorruption makes sure the fingerprint check above can fail: one
// changed character of the armor breaks its checksum.
func TestVendorKeyFingerprintRejectsCorruption(t *testing.T) {
	i := strings.Index(dockerKey, "mQINBFit")
	bad := dockerKey[:i] + "nQINBFit" + dockerKey[i+8:]
	if _, err := armoredFingerprint(bad); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("a corrupted key: err = %v, want an armor checksum error", err)
	}
}

// vendorSources renders repositories as the image gets them: the keyring file, the key's
// fingerprint and the sources.list line, through lower.go's repoKey and aptSourceLine.
func vendorSources(t *testing.T, rs map[string]*recipes.Repository, order []string) string {
	t.Helper()
	var b strings.Builder
	for _, what := range order {
		r := rs[what]
		key, ext, err := (&Lowerer{}).repoKey(r)
		if err != nil {
			t.Fatal(err)
		}
		fpr, err := armoredFingerprint(string(key))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		keyPath := "/etc/apt/keyrings/gpuforge-" + r.Name + ext
		fmt.Fprintf(&b, "# %s\n# %s: key %s\n# /etc/apt/sources.list.d/gpuforge-%s.list:\n%s\n", what, keyPath, fpr, r.Name, aptSourceLine(r, keyPath))
	}
	return b.String()
}

func checkVendorGolden(t *testing.T, name, got string) {
	t.Helper()
	golden := filepath.Join("testdata", "vendor", name)
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run Vendor -update to write it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", golden, diff)
	}
}

func TestVendorDockerCERepository(t *testing.T) {
	rs := map[string]*recipes.Repository{}
	var order []string
	for _, c := range []struct{ distro, suite string }{
		{"debian", "bookworm"}, {"debian", "trixie"}, {"ubuntu", "jammy"}, {"ubuntu", "noble"},
	} {
		r, err := DockerCERepository(c.distro, c.suite)
		if err != nil {
			t.Fatalf("DockerCERepository(%q, %q): %v", c.distro, c.suite, err)
		}
		if r.Key != dockerKey || r.Name != DockerCERepositoryName {
			t.Errorf("DockerCERepository(%q, %q): name %q, and not Docker's key", c.distro, c.suite, r.Name)
		}
		what := "docker-ce " + c.distro + " " + c.suite
		rs[what], order = r, append(order, what)
	}
	checkVendorGolden(t, "docker-ce.txt", vendorSources(t, rs, order))
}

func TestVendorNvidiaToolkitRepository(t *testing.T) {
	r := NvidiaToolkitRepository()
	if r.Key != nvidiaToolkitKey || r.Name != NvidiaToolkitRepositoryName {
		t.Errorf("NvidiaToolkitRepository: name %q, and not NVIDIA's libnvidia-container key", r.Name)
	}
	checkVendorGolden(t, "nvidia-container-toolkit.txt", vendorSources(t, map[string]*recipes.Repository{"nvidia-container-toolkit": r}, []string{"nvidia-container-toolkit"}))
}

func TestVendorNvidiaCUDARepository(t *testing.T) {
	rs := map[string]*recipes.Repository{}
	var order []string
	for _, c := range []struct {
		distro, version string
		key             string
	}{
		{"debian", "debian12", nvidiaCUDAKey},
		{"debian", "debian13", nvidiaCUDADebian13Key},
		{"ubuntu", "ubuntu2204", nvidiaCUDAKey},
		{"ubuntu", "ubuntu2404", nvidiaCUDAKey},
	} {
		for _, arch := range []string{"amd64", "arm64"} {
			r, err := NvidiaCUDARepository(c.distro, c.version, arch)
			if err != nil {
				t.Fatalf("NvidiaCUDARepository(%q, %q, %q): %v", c.distro, c.version, arch, err)
			}
			if r.Key != c.key || r.Name != NvidiaCUDARepositoryName {
				t.Errorf("NvidiaCUDARepository(%q, %q, %q): name %q, or not the key that signs %s", c.distro, c.version, arch, r.Name, c.version)
			}
			what := "nvidia-cuda " + c.version + " " + arch
			rs[what], order = r, append(order, what)
		}
	}
	checkVendorGolden(t, "nvidia-cuda.txt", vendorSources(t, rs, order))
}

func TestVendorNvidiaCUDARelease(t *testing.T) {
	for _, c := range []struct{ distro, suite, want string }{
		{"debian", "bookworm", "debian12"},
		{"debian", "trixie", "debian13"},
		{"ubuntu", "jammy", "ubuntu2204"},
		{"ubuntu", "noble", "ubuntu2404"},
	} {
		got, err := NvidiaCUDARelease(c.distro, c.suite)
		if err != nil || got != c.want {
			t.Errorf("NvidiaCUDARelease(%q, %q) = %q, %v; want %q", c.distro, c.suite, got, err, c.want)
		}
		// Every release it names has a repository.
		if _, err := NvidiaCUDARepository(c.distro, got, "amd64"); err != nil {
			t.Errorf("NvidiaCUDARepository(%q, %q, amd64): %v", c.distro, got, err)
		}
	}
}

func TestVendorUnsupported(t *testing.T) {
	for _, c := range []struct {
		name  string
		call  func() error
		value string
		names []string // what the message must name as supported
	}{
		{"docker distro", func() error { _, err := DockerCERepository("fedora", "41"); return err },
			"fedora", []string{"debian", "ubuntu"}},
		{"docker suite", func() error { _, err := DockerCERepository("debian", "bullseye"); return err },
			"bullseye", []string{"bookworm", "trixie"}},
		{"docker suite of the other distro", func() error { _, err := DockerCERepository("ubuntu", "bookworm"); return err },
			"bookworm", []string{"jammy", "noble"}},
		{"docker empty suite", func() error { _, err := DockerCERepository("debian", ""); return err },
			"", []string{"bookworm", "trixie"}},
		{"cuda distro", func() error { _, err := NvidiaCUDARepository("rhel", "rhel9", "amd64"); return err },
			"rhel", []string{"debian", "ubuntu"}},
		{"cuda version", func() error { _, err := NvidiaCUDARepository("debian", "debian11", "amd64"); return err },
			"debian11", []string{"debian12", "debian13"}},
		{"cuda version of the other distro", func() error { _, err := NvidiaCUDARepository("ubuntu", "debian12", "amd64"); return err },
			"debian12", []string{"ubuntu2204", "ubuntu2404"}},
		{"cuda arch", func() error { _, err := NvidiaCUDARepository("debian", "debian12", "ppc64el"); return err },
			"ppc64el", []string{"amd64 (x86_64)", "arm64 (sbsa)"}},
		{"cuda arch as NVIDIA names it", func() error { _, err := NvidiaCUDARepository("ubuntu", "ubuntu2404", "x86_64"); return err },
			"x86_64", []string{"amd64 (x86_64)", "arm64 (sbsa)"}},
		{"cuda release", func() error { _, err := NvidiaCUDARelease("debian", "bullseye"); return err },
			"debian bullseye", []string{"debian bookworm", "ubuntu noble"}},
		{"distro driver flavor", func() error { _, _, err := DistroDriverPackages("nouveau"); return err },
			"nouveau", []string{"open", "proprietary"}},
		{"driver branch", func() error { _, err := NvidiaDriverPreferences("latest"); return err },
			"latest", []string{`"570"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			var ue *UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want an *UnsupportedError", err)
			}
			if ue.Value != c.value {
				t.Errorf("Value = %q, want %q", ue.Value, c.value)
			}
			msg := err.Error()
			if !strings.Contains(msg, fmt.Sprintf("%q", c.value)) {
				t.Errorf("%q does not name the value %q", msg, c.value)
			}
			for _, n := range c.names {
				if !strings.Contains(msg, n) {
					t.Errorf("%q does not name %s as supported", msg, n)
				}
			}
		})
	}
}

func TestVendorNvidiaDriverPackages(t *testing.T) {
	user := []string{"nvidia-kernel-support", "nvidia-modprobe", "firmware-nvidia-gsp", "nvidia-smi", "libnvidia-ml1", "libcuda1", "nvidia-persistenced"}
	for _, c := range []struct {
		branch, flavor string
		fm             bool
		dkms, user     []string
	}{
		{"570", "open", false, []string{"nvidia-kernel-open-dkms"}, user},
		{"570", "", false, []string{"nvidia-kernel-open-dkms"}, user},
		{"570", "proprietary", false, []string{"nvidia-kernel-dkms"}, user},
		{"570", "open", true, []string{"nvidia-kernel-open-dkms"}, append(user[:len(user):len(user)], "nvidia-fabricmanager-570")},
		{"570.133.20", "proprietary", true, []string{"nvidia-kernel-dkms"}, append(user[:len(user):len(user)], "nvidia-fabricmanager-570")},
		{"535", "proprietary", true, []string{"nvidia-kernel-dkms"}, append(user[:len(user):len(user)], "nvidia-fabricmanager-535")},
		{"580", "open", true, []string{"nvidia-kernel-open-dkms"}, append(user[:len(user):len(user)], "nvidia-fabricmanager")},
		{"595.71.05", "open", true, []string{"nvidia-kernel-open-dkms"}, append(user[:len(user):len(user)], "nvidia-fabricmanager")},
	} {
		dkms, got := NvidiaDriverPackages(c.branch, c.flavor, c.fm)
		if diff := cmp.Diff(c.dkms, dkms); diff != "" {
			t.Errorf("NvidiaDriverPackages(%q, %q, %v) dkms (-want +got):\n%s", c.branch, c.flavor, c.fm, diff)
		}
		if diff := cmp.Diff(c.user, got); diff != "" {
			t.Errorf("NvidiaDriverPackages(%q, %q, %v) userspace (-want +got):\n%s", c.branch, c.flavor, c.fm, diff)
		}
	}
}

func TestVendorDistroDriverPackages(t *testing.T) {
	for _, c := range []struct {
		flavor     string
		dkms, user []string
	}{
		{"proprietary", []string{"nvidia-kernel-dkms"},
			[]string{"nvidia-kernel-support", "nvidia-modprobe", "firmware-nvidia-gsp", "nvidia-smi", "libnvidia-ml1", "libcuda1", "nvidia-persistenced"}},
		{"open", []string{"nvidia-open-kernel-dkms"},
			[]string{"nvidia-open-kernel-support", "nvidia-modprobe", "firmware-nvidia-gsp", "nvidia-smi", "libnvidia-ml1", "libcuda1", "nvidia-persistenced"}},
		{"", []string{"nvidia-open-kernel-dkms"},
			[]string{"nvidia-open-kernel-support", "nvidia-modprobe", "firmware-nvidia-gsp", "nvidia-smi", "libnvidia-ml1", "libcuda1", "nvidia-persistenced"}},
	} {
		dkms, user, err := DistroDriverPackages(c.flavor)
		if err != nil {
			t.Fatalf("DistroDriverPackages(%q): %v", c.flavor, err)
		}
		if diff := cmp.Diff(c.dkms, dkms); diff != "" {
			t.Errorf("DistroDriverPackages(%q) dkms (-want +got):\n%s", c.flavor, diff)
		}
		if diff := cmp.Diff(c.user, user); diff != "" {
			t.Errorf("DistroDriverPackages(%q) userspace (-want +got):\n%s", c.flavor, diff)
		}
		// Nothing that compiles a module reaches the booted host.
		for _, p := range user {
			if strings.Contains(p, "dkms") {
				t.Errorf("DistroDriverPackages(%q): user space has %s", c.flavor, p)
			}
		}
	}
	// Each call returns lists of its own: a caller appending to one changes no other.
	_, a, _ := DistroDriverPackages("open")
	a[0] = "changed"
	if _, b, _ := DistroDriverPackages("open"); b[0] != "nvidia-open-kernel-support" {
		t.Errorf("DistroDriverPackages shares its lists between calls")
	}
}

func TestVendorNvidiaDriverPreferences(t *testing.T) {
	for _, c := range []struct{ branch, pin string }{
		{"570", "Pin: version 570.*\n"},
		{"580", "Pin: version 580.*\n"},
		{"570.133.20", "Pin: version 570.133.20-*\n"},
		{"570.133", "Pin: version 570.133-*\n"},
	} {
		got, err := NvidiaDriverPreferences(c.branch)
		if err != nil {
			t.Fatalf("NvidiaDriverPreferences(%q): %v", c.branch, err)
		}
		want := "# gpuforge: the NVIDIA driver " + c.branch + "\n" +
			"Package: nvidia-* libnvidia-* libcuda* libnvcuvid* libnvoptix* firmware-nvidia-gsp* xserver-xorg-video-nvidia*\n" +
			c.pin + "Pin-Priority: 1001\n"
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("NvidiaDriverPreferences(%q) (-want +got):\n%s", c.branch, diff)
		}
		// Every package NvidiaDriverPackages names is held by the pin.
		_, user := NvidiaDriverPackages(c.branch, "open", true)
		dkms, _ := NvidiaDriverPackages(c.branch, "proprietary", false)
		for _, p := range append(user, dkms...) {
			if !strings.HasPrefix(p, "nvidia-") && !strings.HasPrefix(p, "libnvidia-") && !strings.HasPrefix(p, "libcuda") && !strings.HasPrefix(p, "firmware-nvidia-gsp") {
				t.Errorf("NvidiaDriverPreferences(%q) does not hold %s", c.branch, p)
			}
		}
	}
	for _, bad := range []string{"", "57", "570-open", "570.1.2.3", "r570"} {
		if _, err := NvidiaDriverPreferences(bad); err == nil {
			t.Errorf("NvidiaDriverPreferences(%q): no error", bad)
		}
	}
}
