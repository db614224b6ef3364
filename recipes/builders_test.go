package recipes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseBuilders(t *testing.T) {
	src := `builder "farm" {
  node "x86" {
    endpoint  = "tcp://buildkitd-amd64:1234"
    platforms = ["linux/amd64", "linux/x86_64"]
    tls {
      ca_cert = "certs/ca.pem"
      cert    = "/etc/gpuforge/client.pem"
      key     = "/etc/gpuforge/client-key.pem"
    }
  }
  node "grace" {
    endpoint  = "unix:///run/buildkit/buildkitd.sock"
    platforms = ["arm64"]
  }
}
`
	bs, diags := ParseBuilders("conf/builders.hcl", []byte(src))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	b := FindBuilder(bs, "farm")
	if b == nil || len(b.Nodes) != 2 {
		t.Fatalf("builders = %+v", bs)
	}
	x86, grace := b.Nodes[0], b.Nodes[1]
	if got := strings.Join(x86.Platforms, ","); got != "linux/amd64,linux/amd64" {
		t.Errorf("x86 platforms = %s; want them normalized", got)
	}
	if len(diags) != 0 {
		t.Errorf("two spellings of one platform on one node: want no warning, got %v", diags)
	}
	if x86.TLS.CACert != filepath.Join("conf", "certs", "ca.pem") || x86.TLS.Cert != "/etc/gpuforge/client.pem" {
		t.Errorf("TLS paths = %+v; want relative ones resolved against the file's directory", x86.TLS)
	}
	if got := strings.Join(grace.Platforms, ","); got != "linux/arm64" {
		t.Errorf("grace platforms = %s", got)
	}
	if FindBuilder(bs, "nosuch") != nil {
		t.Error("FindBuilder found a builder that is not defined")
	}
}

// TestParseBuildersErrors: each mistake is an error at the file, line and column where it is.
func TestParseBuildersErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"no scheme", `builder "b" {
  node "n" {
    endpoint = "buildkitd:1234"
  }
}`, `b.hcl:3,5-32: Invalid node endpoint; The endpoint "buildkitd:1234" of node "n" must be unix:///path/to/buildkitd.sock or tcp://host:port.`},
		{"no port", `builder "b" {
  node "n" { endpoint = "tcp://buildkitd" }
}`, `b.hcl:2,14-42: Invalid node endpoint; The endpoint "tcp://buildkitd" of node "n" has no port`},
		{"bad platform", `builder "b" {
  node "n" {
    endpoint  = "tcp://h:1"
    platforms = ["linux/amd64", "plan9/z80/"]
  }
}`, `b.hcl:4,5-46: Invalid platform; Platform "plan9/z80/" of node "n"`},
		{"tls on unix", `builder "b" {
  node "n" {
    endpoint = "unix:///run/bk.sock"
    tls { ca_cert = "ca.pem" }
  }
}`, `b.hcl:4,5-8: TLS on a unix socket`},
		{"cert without key", `builder "b" {
  node "n" {
    endpoint = "tcp://h:1"
    tls { cert = "c.pem" }
  }
}`, `b.hcl:4,5-8: Incomplete client certificate`},
		{"no nodes", `builder "b" {
}`, `b.hcl:1,1-12: Builder without nodes`},
		{"duplicate builder", `builder "b" {
  node "n" { endpoint = "tcp://h:1" }
}
builder "b" {
  node "n" { endpoint = "tcp://h:2" }
}`, `b.hcl:4,1-12: Duplicate builder; A builder named "b" is already defined at b.hcl:1,1-12.`},
		{"duplicate node", `builder "b" {
  node "n" { endpoint = "tcp://h:1" }
  node "n" { endpoint = "tcp://h:2" }
}`, `b.hcl:3,3-11: Duplicate node`},
		{"address as name", `builder "tcp://h:1" {
  node "n" { endpoint = "tcp://h:1" }
}`, `b.hcl:1,1-20: Invalid builder name`},
		{"unknown attribute", `builder "b" {
  node "n" {
    endpoint = "tcp://h:1"
    platform = "linux/amd64"
  }
}`, `b.hcl:4,5-13: Unsupported argument`},
		{"missing endpoint", `builder "b" {
  node "n" {
    platforms = ["linux/amd64"]
  }
}`, `b.hcl:2,12-12: Missing required argument; The argument "endpoint" is required`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := ParseBuilders("b.hcl", []byte(tc.src))
			if !diags.HasErrors() {
				t.Fatalf("no error; want %s", tc.want)
			}
			if got := diags.Error(); !strings.Contains(got, tc.want) {
				t.Errorf("diagnostics:\n%s\nwant one containing:\n%s", got, tc.want)
			}
		})
	}
}

func TestParseBuildersWarnsOnSharedPlatform(t *testing.T) {
	_, diags := ParseBuilders("b.hcl", []byte(`builder "b" {
  node "one" {
    endpoint  = "tcp://h:1"
    platforms = ["linux/amd64"]
  }
  node "two" {
    endpoint  = "tcp://h:2"
    platforms = ["linux/amd64"]
  }
}`))
	if diags.HasErrors() || len(diags) != 1 || !strings.Contains(diags.Error(), `b.hcl:8,5-32: Platform served by two nodes; Both node "one" and node "two" build linux/amd64`) {
		t.Errorf("diagnostics = %v; want one warning at node two's platforms", diags)
	}
}

func TestLoadBuilders(t *testing.T) {
	dir := t.TempDir()
	if bs, diags := LoadBuilders(filepath.Join(dir, "missing.hcl")); len(bs) != 0 || len(diags) != 0 {
		t.Errorf("a missing builders file: %v, %v; want no builders and no error", bs, diags)
	}
	path := filepath.Join(dir, "builders.hcl")
	os.WriteFile(path, []byte(`builder "one" {
  node "n" { endpoint = "tcp://h:1" }
}`), 0o644)
	if bs, diags := LoadBuilders(path); len(bs) != 1 || diags.HasErrors() {
		t.Errorf("LoadBuilders = %v, %v", bs, diags)
	}
	t.Setenv(BuildersEnv, path)
	if got := DefaultBuildersFile(); got != path {
		t.Errorf("DefaultBuildersFile with %s set = %s", BuildersEnv, got)
	}
	t.Setenv(BuildersEnv, "")
	t.Setenv("XDG_CONFIG_HOME", dir)
	if got, want := DefaultBuildersFile(), filepath.Join(dir, "gpuforge", "builders.hcl"); got != want {
		t.Errorf("DefaultBuildersFile = %s; want %s", got, want)
	}
}
