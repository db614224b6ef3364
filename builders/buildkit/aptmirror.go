package buildkit

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// The apt configuration HostAptMirror reads, relative to the root of the host's filesystem.
const (
	aptSourcesList    = "etc/apt/sources.list"
	aptSourcesListDir = "etc/apt/sources.list.d"
)

// HostAptMirror returns the archive mirror of distribution ("debian" or "ubuntu"; empty means
// debian) that the host's apt is configured with: the first URI of a `deb` source for that
// distribution, in the order apt reads its sources (/etc/apt/sources.list, then the *.list and
// deb822 *.sources files of /etc/apt/sources.list.d in lexical order). It is what a bootstrap {}
// base without a mirror uses, so gpuforge never names a mirror itself.
//
// A source is taken for the distribution's archive only when it looks like one: its URI is
// http, https or file; it lists the main component; it is signed by the distribution's archive
// keyring or names no keyring at all; and either the last element of its URI's path is the
// archive's name ("/debian"; "/ubuntu" or "/ubuntu-ports") or it is signed by the archive
// keyring and one of its suites is a release of the distribution (bookworm, bookworm-updates,
// noble, ...), for mirrors at other paths. Security archives (suites ending in -security),
// deb-src lines, disabled deb822 sources (Enabled: no) and third-party repositories (signed by
// their own key, or without a main component, such as Docker's "bookworm stable") never match.
// The URI is returned without a trailing slash.
func HostAptMirror(distribution string) (string, error) {
	return hostAptMirrorIn("/", distribution)
}

// hostAptMirrorIn is HostAptMirror for the apt configuration under root.
func hostAptMirrorIn(root, distribution string) (string, error) {
	dist, err := aptDistribution(distribution)
	if err != nil {
		return "", err
	}
	files := []string{filepath.Join(root, aptSourcesList)}
	dir := filepath.Join(root, aptSourcesListDir)
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading apt sources: %w", err)
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !aptSourceFileName(n) {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		files = append(files, filepath.Join(dir, n))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("reading apt sources: %w", err)
		}
		if m, ok := aptMirrorFromSources(dist, filepath.Base(f), string(data)); ok {
			return m, nil
		}
	}
	return "", fmt.Errorf("no apt source for %s is configured on this host (looked in /%s and /%s/*.list, *.sources): set mirror in the bootstrap block to the %s mirror to use", dist, aptSourcesList, aptSourcesListDir, dist)
}

// aptDistribution validates a bootstrap distribution name; empty means debian.
func aptDistribution(d string) (string, error) {
	switch d {
	case "":
		return "debian", nil
	case "debian", "ubuntu":
		return d, nil
	}
	return "", fmt.Errorf("unknown distribution %q: gpuforge bootstraps debian or ubuntu", d)
}

// aptSourceFileName reports whether apt reads a file of sources.list.d with this name: apt
// ignores files with other extensions (.disabled, .save, dpkg leftovers) and with characters
// other than letters, digits, '_', '-' and '.'.
func aptSourceFileName(name string) bool {
	base, ok := strings.CutSuffix(name, ".list")
	if !ok {
		if base, ok = strings.CutSuffix(name, ".sources"); !ok {
			return false
		}
	}
	if base == "" {
		return false
	}
	for _, r := range base {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// aptSource is one apt source: a one-line entry or a deb822 stanza.
type aptSource struct {
	types, uris, suites, components []string
	signedBy                        string
	enabled                         bool
}

// aptMirrorFromSources returns the first mirror of dist among the sources of one file; name
// tells the format: *.sources is deb822, anything else one-line.
func aptMirrorFromSources(dist, name, data string) (string, bool) {
	var srcs []aptSource
	if strings.HasSuffix(name, ".sources") {
		srcs = parseDeb822Sources(data)
	} else {
		srcs = parseOneLineSources(data)
	}
	for _, s := range srcs {
		if !s.enabled || !slices.Contains(s.types, "deb") {
			continue
		}
		for _, u := range s.uris {
			if aptSourceDistribution(u, s) == dist {
				return strings.TrimRight(u, "/"), true
			}
		}
	}
	return "", false
}

// parseOneLineSources parses the one-line format:
//
//	deb [ option=value ... ] uri suite [component ...]
func parseOneLineSources(data string) []aptSource {
	var out []aptSource
	sc := bufio.NewScanner(strings.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 3 {
			continue
		}
		s := aptSource{types: []string{fields[0]}, enabled: true}
		rest := fields[1:]
		if strings.HasPrefix(rest[0], "[") {
			// Options: "[arch=amd64 signed-by=/k.gpg]", "[ arch=amd64 ]", ...
			var opts []string
			closed := false
			for len(rest) > 0 && !closed {
				tok := rest[0]
				rest = rest[1:]
				if strings.HasSuffix(tok, "]") {
					closed = true
				}
				tok = strings.TrimSuffix(strings.TrimPrefix(tok, "["), "]")
				if tok != "" {
					opts = append(opts, tok)
				}
			}
			if !closed {
				continue
			}
			for _, o := range opts {
				if k, v, ok := strings.Cut(o, "="); ok && strings.EqualFold(k, "signed-by") {
					s.signedBy = v
				}
			}
		}
		if len(rest) < 2 {
			continue
		}
		s.uris = []string{rest[0]}
		s.suites = []string{rest[1]}
		s.components = rest[2:]
		out = append(out, s)
	}
	return out
}

// parseDeb822Sources parses the deb822 format of *.sources files: stanzas of "Field: value"
// lines separated by blank lines, continuation lines starting with a space or a tab, comment
// lines starting with '#'.
func parseDeb822Sources(data string) []aptSource {
	var out []aptSource
	fields := map[string]string{}
	last := ""
	flush := func() {
		if len(fields) > 0 {
			s := aptSource{
				types:      strings.Fields(fields["types"]),
				uris:       strings.Fields(fields["uris"]),
				suites:     strings.Fields(fields["suites"]),
				components: strings.Fields(fields["components"]),
				signedBy:   strings.TrimSpace(fields["signed-by"]),
				enabled:    !strings.EqualFold(strings.TrimSpace(fields["enabled"]), "no"),
			}
			out = append(out, s)
		}
		fields = map[string]string{}
		last = ""
	}
	sc := bufio.NewScanner(strings.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				fields[last] += "\n" + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}

// Releases by distribution, for telling which archive a source at an unusual path serves.
var aptReleases = map[string]string{
	// Debian codenames and aliases.
	"buzz": "debian", "rex": "debian", "bo": "debian", "hamm": "debian", "slink": "debian",
	"potato": "debian", "woody": "debian", "sarge": "debian", "etch": "debian", "lenny": "debian",
	"squeeze": "debian", "wheezy": "debian", "jessie": "debian", "stretch": "debian",
	"buster": "debian", "bullseye": "debian", "bookworm": "debian", "trixie": "debian",
	"forky": "debian", "duke": "debian", "sid": "debian", "experimental": "debian",
	"stable": "debian", "testing": "debian", "unstable": "debian", "oldstable": "debian",
	"oldoldstable": "debian",
	// Ubuntu codenames.
	"trusty": "ubuntu", "xenial": "ubuntu", "bionic": "ubuntu", "focal": "ubuntu",
	"jammy": "ubuntu", "kinetic": "ubuntu", "lunar": "ubuntu", "mantic": "ubuntu",
	"noble": "ubuntu", "oracular": "ubuntu", "plucky": "ubuntu", "questing": "ubuntu",
	"resolute": "ubuntu", "devel": "ubuntu",
}

// aptSourceDistribution tells which distribution's archive the source s at uri serves:
// "debian", "ubuntu" or "" (another repository, a security archive, or an unusable URI).
func aptSourceDistribution(uri string, s aptSource) string {
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") {
		return ""
	}
	if u.Scheme != "file" && u.Host == "" {
		return ""
	}
	if !slices.Contains(s.components, "main") {
		return ""
	}
	var releases []string
	for _, suite := range s.suites {
		if strings.HasSuffix(suite, "-security") || strings.HasSuffix(suite, "/updates") {
			continue
		}
		base, _, _ := strings.Cut(suite, "-") // bookworm-updates, noble-backports
		releases = append(releases, aptReleases[base])
	}
	if len(releases) == 0 {
		return "" // a security archive
	}
	// The archive keyring a source names, if any: debian-archive-keyring.gpg,
	// debian-archive-bookworm-stable.asc, ubuntu-archive-keyring.gpg.
	keyring := ""
	switch {
	case s.signedBy == "":
	case strings.Contains(s.signedBy, "debian-archive"):
		keyring = "debian"
	case strings.Contains(s.signedBy, "ubuntu-archive"):
		keyring = "ubuntu"
	default:
		return "" // signed by a third party's key (or an embedded one)
	}
	byPath := ""
	switch path.Base(strings.TrimRight(u.Path, "/")) {
	case "debian":
		byPath = "debian"
	case "ubuntu", "ubuntu-ports":
		byPath = "ubuntu"
	}
	switch {
	case byPath != "" && (keyring == "" || keyring == byPath):
		return byPath
	case byPath == "" && keyring != "" && slices.Contains(releases, keyring):
		return keyring
	}
	return ""
}
