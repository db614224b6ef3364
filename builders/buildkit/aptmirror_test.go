package buildkit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Mirror URLs in these fixtures are made up (example.org, example.net, ...): gpuforge names no
// real mirror anywhere.
func TestAptMirrorFromSources(t *testing.T) {
	tests := []struct {
		name, file, dist, data string
		want                   string // "" when no source of dist is in the file
	}{
		{
			name: "one-line", file: "sources.list", dist: "debian",
			data: "deb http://mirror.example.org/debian/ bookworm main\n",
			want: "http://mirror.example.org/debian",
		},
		{
			name: "one-line comments deb-src and security first", file: "sources.list", dist: "debian",
			data: `# deb http://commented.example.org/debian bookworm main
deb-src http://src.example.org/debian bookworm main
deb http://security.example.org/debian-security bookworm-security main
deb http://security.example.org/debian bookworm-security main
  deb   http://mirror.example.org/debian   bookworm main contrib non-free-firmware # trailing
deb http://second.example.org/debian bookworm main
`,
			want: "http://mirror.example.org/debian",
		},
		{
			name: "one-line options", file: "debian.list", dist: "debian",
			data: "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] https://mirror.example.org/pub/debian bookworm-updates main\n",
			want: "https://mirror.example.org/pub/debian",
		},
		{
			name: "one-line spaced options", file: "debian.list", dist: "debian",
			data: "deb [ arch=amd64,arm64 trusted=yes ] http://mirror.example.org/debian trixie main\n",
			want: "http://mirror.example.org/debian",
		},
		{
			name: "one-line unterminated options", file: "debian.list", dist: "debian",
			data: "deb [arch=amd64 http://mirror.example.org/debian trixie main\n",
		},
		{
			name: "third-party repositories", file: "sources.list", dist: "debian",
			data: `deb [signed-by=/etc/apt/keyrings/docker.asc] https://download.example.com/linux/debian bookworm stable
deb https://download.example.com/linux/debian bookworm stable
deb [signed-by=/usr/share/keyrings/vendor.gpg] https://packages.example.com/debian/12/prod bookworm main
deb https://packages.example.net/apt cloud-sdk-bookworm main
deb https://repo.example.net/cuda/repos/debian12/x86_64/ /
`,
		},
		{
			name: "file and unusual schemes", file: "sources.list", dist: "debian",
			data: `deb cdrom:[Debian GNU/Linux 12]/ bookworm main
deb mirror+file:/etc/apt/mirrors/debian.list bookworm main
deb tor+http://onion.example.org/debian bookworm main
deb file:/srv/mirror/debian bookworm main
`,
			want: "file:/srv/mirror/debian",
		},
		{
			name: "ubuntu from a debian host", file: "sources.list", dist: "ubuntu",
			data: "deb http://mirror.example.org/debian bookworm main\n",
		},
		{
			name: "ubuntu one-line", file: "sources.list", dist: "ubuntu",
			data: `deb http://security.example.org/ubuntu noble-security main restricted
deb http://archive.example.org/ubuntu/ noble main restricted universe
`,
			want: "http://archive.example.org/ubuntu",
		},
		{
			name: "ubuntu ports", file: "sources.list", dist: "ubuntu",
			data: "deb http://ports.example.org/ubuntu-ports noble main\n",
			want: "http://ports.example.org/ubuntu-ports",
		},
		{
			name: "debian asked, ubuntu listed first", file: "sources.list", dist: "debian",
			data: `deb http://archive.example.org/ubuntu noble main
deb http://mirror.example.org/debian bookworm main
`,
			want: "http://mirror.example.org/debian",
		},
		{
			name: "deb822 as Debian ships it", file: "debian.sources", dist: "debian",
			data: `Types: deb
# http://snapshot.example.org/archive/debian/20250520T000000Z
URIs: http://mirror.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`,
			want: "http://mirror.example.org/debian",
		},
		{
			name: "deb822 security first, several URIs, case and CRLF", file: "x.sources", dist: "debian",
			data: "types: deb deb-src\r\nuris: http://security.example.org/debian-security\r\nsuites: trixie-security\r\ncomponents: main\r\n\r\n" +
				"TYPES: deb-src deb\r\nURIS: ftp://old.example.org/debian https://one.example.org/debian/ https://two.example.org/debian\r\nSUITES: trixie\r\nCOMPONENTS: main contrib\r\n",
			want: "https://one.example.org/debian",
		},
		{
			name: "deb822 disabled and deb-src only", file: "x.sources", dist: "debian",
			data: `Enabled: no
Types: deb
URIs: http://disabled.example.org/debian
Suites: bookworm
Components: main

Types: deb-src
URIs: http://src.example.org/debian
Suites: bookworm
Components: main
`,
		},
		{
			name: "deb822 embedded key is a third party", file: "vendor.sources", dist: "debian",
			data: `Types: deb
URIs: https://vendor.example.com/debian
Suites: bookworm
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBFit2ioBEADhWpZ8/wvZ6hUTiXOwQHXMAlaFHcPH9hAtr4F1y2+OYdbtMuth
 -----END PGP PUBLIC KEY BLOCK-----
`,
		},
		{
			name: "deb822 mirror at another path signed by the archive keyring", file: "corp.sources", dist: "debian",
			data: `Types: deb
URIs: https://artifacts.example.com/artifactory/deb-remote/
Suites: bookworm bookworm-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`,
			want: "https://artifacts.example.com/artifactory/deb-remote",
		},
		{
			name: "other path without the keyring is not taken", file: "corp.sources", dist: "debian",
			data: `Types: deb
URIs: https://artifacts.example.com/artifactory/deb-remote/
Suites: bookworm
Components: main
`,
		},
		{
			name: "debian keyring on an ubuntu path", file: "odd.list", dist: "ubuntu",
			data: "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example.org/ubuntu noble main\n",
		},
		{
			name: "deb822 continuation and comments inside a stanza", file: "x.sources", dist: "debian",
			data: `Types: deb
URIs:
 http://first.example.org/debian
# a comment line does not end the stanza
 http://second.example.org/debian
Suites: sid
Components: main
`,
			want: "http://first.example.org/debian",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := aptMirrorFromSources(tt.dist, tt.file, tt.data)
			if got != tt.want || ok != (tt.want != "") {
				t.Errorf("aptMirrorFromSources(%q, %q) = %q, %v; want %q", tt.dist, tt.file, got, ok, tt.want)
			}
		})
	}
}

func TestHostAptMirrorFileOrder(t *testing.T) {
	write := func(root, name, data string) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	// sources.list is read first; it has no debian source here.
	write(root, "etc/apt/sources.list", "deb http://archive.example.org/ubuntu noble main\n")
	// Then sources.list.d in lexical order, .list and .sources alike; other names are ignored.
	write(root, "etc/apt/sources.list.d/00-docker.list", "deb https://download.example.com/linux/debian bookworm stable\n")
	write(root, "etc/apt/sources.list.d/10-old.list.disabled", "deb http://disabled.example.org/debian bookworm main\n")
	write(root, "etc/apt/sources.list.d/10-old.list.save", "deb http://save.example.org/debian bookworm main\n")
	write(root, "etc/apt/sources.list.d/20-main.sources", "Types: deb\nURIs: http://twenty.example.org/debian\nSuites: bookworm\nComponents: main\n")
	write(root, "etc/apt/sources.list.d/30-more.list", "deb http://thirty.example.org/debian bookworm main\n")

	for dist, want := range map[string]string{
		"":       "http://twenty.example.org/debian",
		"debian": "http://twenty.example.org/debian",
		"ubuntu": "http://archive.example.org/ubuntu",
	} {
		got, err := hostAptMirrorIn(root, dist)
		if err != nil || got != want {
			t.Errorf("hostAptMirrorIn(%q) = %q, %v; want %q", dist, got, err, want)
		}
	}

	if _, err := hostAptMirrorIn(root, "fedora"); err == nil || !strings.Contains(err.Error(), "debian or ubuntu") {
		t.Errorf("hostAptMirrorIn(fedora): err = %v, want an unknown-distribution error", err)
	}

	// No configuration at all: the error says to set the mirror.
	_, err := hostAptMirrorIn(t.TempDir(), "debian")
	if err == nil || !strings.Contains(err.Error(), "set mirror in the bootstrap block") {
		t.Errorf("hostAptMirrorIn(empty root): err = %v, want one that says to set the bootstrap mirror", err)
	}
}

func TestAptSourceFileName(t *testing.T) {
	for name, want := range map[string]bool{
		"debian.sources": true, "a_b-c.1.list": true, "x.list.disabled": false,
		"x.list~": false, "x.list.dpkg-dist": false, ".list": false, "a b.list": false, "sources.list": true,
	} {
		if got := aptSourceFileName(name); got != want {
			t.Errorf("aptSourceFileName(%q) = %v, want %v", name, got, want)
		}
	}
}
