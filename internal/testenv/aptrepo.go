package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// ToolkitVersion is the NVIDIA container toolkit the tests package: the version gpuforge's go.mod
// already requires for nvcdi, built from NVIDIA's own Go module.
const ToolkitVersion = "1.20.2"

// Deb is a Debian package for a test repository: its control fields and files by path.
type Deb struct {
	Name, Version, Depends, Description string
	Files                               map[string]string // path in the package -> file on this machine
}

// AptRepo is a signed flat apt repository served on loopback.
type AptRepo struct {
	URL string // http://127.0.0.1:PORT/
	Key string // the armored public key that signs InRelease
}

// StartAptRepo builds the packages with dpkg-deb, writes a flat repository (Packages, Release,
// InRelease signed by a key made for this test with gpg) and serves it on loopback until the
// test ends. BuildKit's run steps reach it: the test daemons use the host's network.
func StartAptRepo(t testing.TB, debs ...Deb) *AptRepo {
	t.Helper()
	dpkgDeb, gpg := Tool(t, "dpkg-deb"), Tool(t, "gpg")
	dir := t.TempDir()
	var packages bytes.Buffer
	for _, d := range debs {
		file, err := buildDeb(dpkgDeb, t.TempDir(), dir, d)
		if err != nil {
			t.Fatalf("testenv: package %s: %v", d.Name, err)
		}
		data, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(&packages, "Package: %s\nVersion: %s\nArchitecture: amd64\nMaintainer: gpuforge tests <tests@gpuforge.invalid>\n", d.Name, d.Version)
		if d.Depends != "" {
			fmt.Fprintf(&packages, "Depends: %s\n", d.Depends)
		}
		fmt.Fprintf(&packages, "Filename: ./%s\nSize: %d\nSHA256: %s\nDescription: %s\n\n", file, len(data), hex.EncodeToString(sum[:]), d.Description)
	}
	if err := os.WriteFile(filepath.Join(dir, "Packages"), packages.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	psum := sha256.Sum256(packages.Bytes())
	release := fmt.Sprintf("Origin: gpuforge-tests\nLabel: gpuforge-tests\nArchitectures: amd64\nDate: Thu, 01 Jan 2026 00:00:00 UTC\nSHA256:\n %s %d Packages\n",
		hex.EncodeToString(psum[:]), packages.Len())
	if err := os.WriteFile(filepath.Join(dir, "Release"), []byte(release), 0o644); err != nil {
		t.Fatal(err)
	}

	home := t.TempDir()
	gpgRun := func(stdin string, args ...string) []byte {
		cmd := exec.Command(gpg, append([]string{"--homedir", home, "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("testenv: gpg %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		return out.Bytes()
	}
	gpgRun("", "--quick-generate-key", "gpuforge tests <tests@gpuforge.invalid>", "ed25519", "sign", "never")
	key := gpgRun("", "--armor", "--export", "tests@gpuforge.invalid")
	gpgRun("", "--local-user", "tests@gpuforge.invalid", "--clearsign", "--output", filepath.Join(dir, "InRelease"), filepath.Join(dir, "Release"))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &AptRepo{URL: "http://" + ln.Addr().String() + "/", Key: string(key)}
}

// buildDeb assembles one package in work and writes NAME_VERSION_amd64.deb to dir.
func buildDeb(dpkgDeb, work, dir string, d Deb) (string, error) {
	root := filepath.Join(work, "root")
	if err := os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755); err != nil {
		return "", err
	}
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: amd64\nMaintainer: gpuforge tests <tests@gpuforge.invalid>\n", d.Name, d.Version)
	if d.Depends != "" {
		control += "Depends: " + d.Depends + "\n"
	}
	control += "Description: " + d.Description + "\n"
	if err := os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte(control), 0o644); err != nil {
		return "", err
	}
	paths := make([]string, 0, len(d.Files))
	for p := range d.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		data, err := os.ReadFile(d.Files[p])
		if err != nil {
			return "", err
		}
		dst := filepath.Join(root, filepath.FromSlash(strings.TrimPrefix(p, "/")))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(dst, data, 0o755); err != nil {
			return "", err
		}
	}
	file := fmt.Sprintf("%s_%s_amd64.deb", d.Name, d.Version)
	out, err := exec.Command(dpkgDeb, "--root-owner-group", "--build", root, filepath.Join(dir, file)).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("dpkg-deb: %v\n%s", err, out)
	}
	return file, nil
}

var toolkitBins struct {
	once sync.Once
	dir  string
	err  error
}

// ToolkitBinaries builds nvidia-ctk, nvidia-container-runtime and nvidia-cdi-hook at
// ToolkitVersion from NVIDIA's Go module (go install, with cgo as NVIDIA builds them) into the
// cache directory, once per machine, and returns the directory holding them.
func ToolkitBinaries(t testing.TB) string {
	t.Helper()
	goBin := Tool(t, "go")
	toolkitBins.once.Do(func() {
		cache, err := cacheDir()
		if err != nil {
			toolkitBins.err = err
			return
		}
		dir := filepath.Join(cache, "nvidia-container-toolkit-"+ToolkitVersion)
		names := []string{"nvidia-ctk", "nvidia-container-runtime", "nvidia-cdi-hook"}
		have := true
		for _, n := range names {
			if !isExecutable(filepath.Join(dir, n)) {
				have = false
			}
		}
		if have {
			toolkitBins.dir = dir
			return
		}
		var pkgs []string
		for _, n := range names {
			pkgs = append(pkgs, "github.com/NVIDIA/nvidia-container-toolkit/cmd/"+n+"@v"+ToolkitVersion)
		}
		cmd := exec.Command(goBin, append([]string{"install", "-ldflags=-s -w"}, pkgs...)...)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=1", "CGO_CFLAGS=-Wno-deprecated-declarations")
		if out, err := cmd.CombinedOutput(); err != nil {
			toolkitBins.err = fmt.Errorf("go install %s: %v\n%s", strings.Join(pkgs, " "), err, out)
			return
		}
		toolkitBins.dir = dir
	})
	if toolkitBins.err != nil {
		t.Fatalf("testenv: %v", toolkitBins.err)
	}
	return toolkitBins.dir
}

// ToolkitDebs are the NVIDIA container toolkit's two packages as NVIDIA's repository names
// them, holding the binaries of ToolkitBinaries.
func ToolkitDebs(t testing.TB) []Deb {
	dir := ToolkitBinaries(t)
	v := ToolkitVersion + "-1"
	return []Deb{
		{Name: "nvidia-container-toolkit-base", Version: v, Description: "NVIDIA Container Toolkit Base (built from NVIDIA's Go module for gpuforge's tests)",
			Files: map[string]string{
				"/usr/bin/nvidia-ctk":               filepath.Join(dir, "nvidia-ctk"),
				"/usr/bin/nvidia-container-runtime": filepath.Join(dir, "nvidia-container-runtime"),
				"/usr/bin/nvidia-cdi-hook":          filepath.Join(dir, "nvidia-cdi-hook"),
			}},
		{Name: "nvidia-container-toolkit", Version: v, Depends: "nvidia-container-toolkit-base (= " + v + ")",
			Description: "NVIDIA Container Toolkit (built from NVIDIA's Go module for gpuforge's tests)", Files: map[string]string{}},
	}
}
