package recipes

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/platforms"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// ScratchImage is the image name that stands for an empty file system, as FROM scratch does in a
// Dockerfile: `from = "scratch"`.
const ScratchImage = "scratch"

// BuildersEnv names the environment variable that gives the builders file's path.
const BuildersEnv = "GPUFORGE_BUILDERS"

// Builder is a named set of BuildKit daemons gpuforge builds on, as `docker buildx create
// --append` makes one: each node is an endpoint and the platforms it builds natively. Builders
// are the user's (or the CI runner's) infrastructure, not the recipe's, so they live in a file of
// their own (DefaultBuildersFile), in the recipe language:
//
//	builder "farm" {
//	  node "x86" {
//	    endpoint  = "tcp://buildkitd-amd64.build.svc:1234"
//	    platforms = ["linux/amd64"]
//	    tls {
//	      ca_cert = "certs/ca.pem"
//	      cert    = "certs/client.pem"
//	      key     = "certs/client-key.pem"
//	    }
//	  }
//	  node "grace" {
//	    endpoint  = "tcp://buildkitd-arm64.build.svc:1234"
//	    platforms = ["linux/arm64"]
//	    tls { … }
//	  }
//	}
type Builder struct {
	Name      string         `hcl:"name,label"`
	Nodes     []*BuilderNode `hcl:"node,block"`
	DeclRange hcl.Range      `hcl:",def_range"`
}

// BuilderNode is one BuildKit daemon of a builder.
type BuilderNode struct {
	Name      string      `hcl:"name,label"`
	Endpoint  string      `hcl:"endpoint"`             // unix:///path/to/buildkitd.sock or tcp://host:port
	Platforms []string    `hcl:"platforms,optional"`   // what it builds natively; none: whatever its workers report
	TLS       *BuilderTLS `hcl:"tls,block"`            // mutual TLS for a tcp:// endpoint
	DeclRange hcl.Range   `hcl:",def_range"`           //
	EndRange  hcl.Range   `hcl:"endpoint,attr_range"`  //
	PlatRange hcl.Range   `hcl:"platforms,attr_range"` //
}

// BuilderTLS are the PEM files a node's TLS connection uses; relative paths are relative to the
// builders file.
type BuilderTLS struct {
	CACert     string    `hcl:"ca_cert,optional"`     // the CA that signed the daemon's certificate
	Cert       string    `hcl:"cert,optional"`        // the client certificate (mutual TLS)
	Key        string    `hcl:"key,optional"`         // its key
	ServerName string    `hcl:"server_name,optional"` // the name to verify the daemon's certificate against
	DeclRange  hcl.Range `hcl:",def_range"`
}

// buildersFile is the builders file's top level.
type buildersFile struct {
	Builders []*Builder `hcl:"builder,block"`
}

// DefaultBuildersFile is where gpuforge reads builder definitions: $GPUFORGE_BUILDERS, else
// $XDG_CONFIG_HOME/gpuforge/builders.hcl, else ~/.config/gpuforge/builders.hcl.
func DefaultBuildersFile() string {
	if p := os.Getenv(BuildersEnv); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "gpuforge", "builders.hcl")
}

// LoadBuilders reads and checks the builder definitions of a builders file. A file that does
// not exist holds no builders and is no error. Every problem is a diagnostic naming the file,
// line and column.
func LoadBuilders(path string) ([]*Builder, hcl.Diagnostics) {
	if path == "" {
		return nil, nil
	}
	src, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Failed to read builders file",
			Detail:   fmt.Sprintf("Cannot read %s: %s.", path, unwrapPathError(err)),
			Subject:  &hcl.Range{Filename: path},
		}}
	}
	return ParseBuilders(path, src)
}

// ParseBuilders is LoadBuilders on a file's contents.
func ParseBuilders(filename string, src []byte) ([]*Builder, hcl.Diagnostics) {
	f, diags := hclparse.NewParser().ParseHCL(src, filename)
	if diags.HasErrors() {
		return nil, diags
	}
	var bf buildersFile
	diags = append(diags, gohcl.DecodeBody(f.Body, nil, &bf)...)
	if diags.HasErrors() {
		return nil, diags
	}
	dir := filepath.Dir(filename)
	errorf := func(rng hcl.Range, summary, format string, args ...any) {
		r := rng
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: &r})
	}
	seen := map[string]hcl.Range{}
	for _, b := range bf.Builders {
		if prev, ok := seen[b.Name]; ok {
			errorf(b.DeclRange, "Duplicate builder", "A builder named %q is already defined at %s.", b.Name, prev)
			continue
		}
		seen[b.Name] = b.DeclRange
		if strings.Contains(b.Name, "://") || b.Name == "" {
			errorf(b.DeclRange, "Invalid builder name", "The builder name %q must not be empty or look like an address: --builder takes either a name or an address.", b.Name)
		}
		if len(b.Nodes) == 0 {
			errorf(b.DeclRange, "Builder without nodes", "Builder %q has no node block; give it at least one node with an endpoint.", b.Name)
		}
		nodes := map[string]hcl.Range{}
		claimed := map[string]string{} // platform -> node
		for _, n := range b.Nodes {
			if prev, ok := nodes[n.Name]; ok {
				errorf(n.DeclRange, "Duplicate node", "Builder %q already has a node named %q, at %s.", b.Name, n.Name, prev)
			}
			nodes[n.Name] = n.DeclRange
			u, err := url.Parse(n.Endpoint)
			switch {
			case err != nil || (u.Scheme != "tcp" && u.Scheme != "unix"):
				errorf(n.EndRange, "Invalid node endpoint", "The endpoint %q of node %q must be unix:///path/to/buildkitd.sock or tcp://host:port.", n.Endpoint, n.Name)
			case u.Scheme == "tcp" && u.Port() == "":
				errorf(n.EndRange, "Invalid node endpoint", "The endpoint %q of node %q has no port: use tcp://host:port.", n.Endpoint, n.Name)
			case u.Scheme == "unix" && u.Path == "":
				errorf(n.EndRange, "Invalid node endpoint", "The endpoint %q of node %q has no socket path: use unix:///path/to/buildkitd.sock.", n.Endpoint, n.Name)
			case u.Scheme == "unix" && n.TLS != nil:
				errorf(n.TLS.DeclRange, "TLS on a unix socket", "Node %q connects over a unix socket; tls applies to tcp:// endpoints only.", n.Name)
			}
			for i, s := range n.Platforms {
				p, err := platforms.Parse(s)
				if err != nil {
					errorf(n.PlatRange, "Invalid platform", "Platform %q of node %q: %v.", s, n.Name, err)
					continue
				}
				n.Platforms[i] = platforms.Format(platforms.Normalize(p))
				if other, ok := claimed[n.Platforms[i]]; ok && other != n.Name {
					diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "Platform served by two nodes",
						Detail:  fmt.Sprintf("Both node %q and node %q build %s natively; gpuforge builds it on %q, the first.", other, n.Name, n.Platforms[i], other),
						Subject: &n.PlatRange})
				} else {
					claimed[n.Platforms[i]] = n.Name
				}
			}
			if t := n.TLS; t != nil {
				if (t.Cert == "") != (t.Key == "") {
					errorf(t.DeclRange, "Incomplete client certificate", "The tls block of node %q needs both cert and key for a client certificate, or neither.", n.Name)
				}
				for _, p := range []*string{&t.CACert, &t.Cert, &t.Key} {
					if *p != "" && !filepath.IsAbs(*p) {
						*p = filepath.Join(dir, *p)
					}
				}
			}
		}
	}
	return bf.Builders, diags
}

// FindBuilder returns the builder named name, or nil.
func FindBuilder(builders []*Builder, name string) *Builder {
	for _, b := range builders {
		if b.Name == name {
			return b
		}
	}
	return nil
}
