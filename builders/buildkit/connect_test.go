package buildkit_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/internal/testenv"
)

func TestParseAddress(t *testing.T) {
	for _, addr := range []string{
		"unix:///run/buildkit/buildkitd.sock",
		"tcp://127.0.0.1:1234",
		"tcp://builder.example.com:443",
		"tcp://[::1]:1234",
	} {
		if _, err := buildkit.ParseAddress(addr); err != nil {
			t.Errorf("ParseAddress(%q): %v", addr, err)
		}
	}
	for _, tc := range []struct{ addr, want string }{
		{"", "empty"},
		{"/run/buildkit/buildkitd.sock", "write unix:///run/buildkit/buildkitd.sock"},
		{"127.0.0.1:1234", "write tcp://127.0.0.1:1234"},
		{"localhost:1234", "write tcp://localhost:1234"},
		{"unix://run/buildkitd.sock", "absolute path"},
		{"unix://", "absolute path"},
		{"tcp://127.0.0.1", "host and a port"},
		{"tcp://:1234", "host and a port"},
		{"tcp://127.0.0.1:http", "port"},
		{"tcp://127.0.0.1:70000", "not a number"},
		{"tcp://127.0.0.1:1234/path", "nothing more"},
		{"docker-container://buildkitd", "does not support the docker-container:// scheme"},
		{"ssh://me@host", "does not support the ssh:// scheme"},
	} {
		_, err := buildkit.ParseAddress(tc.addr)
		var ae *buildkit.AddressError
		if !errors.As(err, &ae) {
			t.Errorf("ParseAddress(%q) = %v, want an *AddressError", tc.addr, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, tc.want) || !strings.Contains(msg, `"`+tc.addr+`"`) {
			t.Errorf("ParseAddress(%q) = %q; want it to quote the address and say %q", tc.addr, msg, tc.want)
		}
	}
}

func connectCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestConnectUnix(t *testing.T) {
	addr := testenv.StartBuildkitd(t)
	ctx := connectCtx(t)

	check := func(t *testing.T, opts ...buildkit.ConnectOption) {
		t.Helper()
		c, err := buildkit.Connect(ctx, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		info, err := buildkit.Info(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if want := testenv.PinnedVersion(t, "tools/go.mod", "github.com/moby/buildkit"); info.Version.Version != want {
			t.Errorf("Info: version %q, want %q", info.Version.Version, want)
		}
		if len(info.Workers) != 1 || !slices.Contains(info.Platforms(), "linux/amd64") && !slices.Contains(info.Platforms(), "linux/arm64") {
			t.Errorf("Info: %d workers, platforms %v; want one worker building for this machine", len(info.Workers), info.Platforms())
		}
	}
	t.Run("WithAddress", func(t *testing.T) {
		t.Setenv(buildkit.BuildkitHostEnv, "tcp://127.0.0.1:1") // the option wins over the environment
		check(t, buildkit.WithAddress(addr))
	})
	t.Run("BUILDKIT_HOST", func(t *testing.T) {
		t.Setenv(buildkit.BuildkitHostEnv, addr)
		check(t, buildkit.WithAddress(""), buildkit.WithDaemonOptions(buildkit.WithBuildkitdPath("/nonexistent/buildkitd")))
	})
}

func TestConnectStartsLocalDaemon(t *testing.T) {
	dir, opts := localForTest(t)
	t.Setenv(buildkit.BuildkitHostEnv, "")
	ctx := connectCtx(t)
	c, err := buildkit.Connect(ctx, buildkit.WithDaemonOptions(opts...))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := buildkit.LocalStatus(ctx, dir)
	if err != nil || !st.Ready {
		t.Errorf("LocalStatus after Connect with no address = %+v, %v; want the local daemon running", st, err)
	}
	if _, err := buildkit.Connect(ctx, buildkit.WithTLS("ca.pem", "", "", ""), buildkit.WithDaemonOptions(opts...)); err == nil || !strings.Contains(err.Error(), "tcp://") {
		t.Errorf("Connect to the local daemon with TLS = %v; want an error saying TLS needs a tcp:// builder", err)
	}
}

func TestConnectTCPWithMTLS(t *testing.T) {
	addr, files := testenv.StartBuildkitdTLS(t)
	ctx := connectCtx(t)

	c, err := buildkit.Connect(ctx, buildkit.WithAddress(addr), buildkit.WithTLS(files.CACert, files.ClientCert, files.ClientKey, ""))
	if err != nil {
		t.Fatalf("Connect with mTLS: %v", err)
	}
	info, err := buildkit.Info(ctx, c)
	c.Close()
	if err != nil || info.Version.Version == "" {
		t.Fatalf("Info over mTLS = %+v, %v", info, err)
	}

	other := testenv.WriteTLSFiles(t, t.TempDir()) // a CA the daemon does not know
	for _, tc := range []struct {
		name string
		opts []buildkit.ConnectOption
		want []string
	}{
		{"no client certificate", []buildkit.ConnectOption{buildkit.WithTLS(files.CACert, "", "", "")},
			[]string{"no client certificate was given", "--tlscert and --tlskey"}},
		{"client certificate of another CA", []buildkit.ConnectOption{buildkit.WithTLS(files.CACert, other.ClientCert, other.ClientKey, "")},
			[]string{"--tlscert"}},
		{"server of another CA", []buildkit.ConnectOption{buildkit.WithTLS(other.CACert, files.ClientCert, files.ClientKey, "")},
			[]string{"certificate signed by unknown authority", "--tlscacert"}},
		{"wrong server name", []buildkit.ConnectOption{buildkit.WithTLS(files.CACert, files.ClientCert, files.ClientKey, "builder.example.com")},
			[]string{"builder.example.com"}},
		{"no TLS", nil,
			[]string{"give --tlscacert, --tlscert and --tlskey if it uses TLS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := buildkit.Connect(ctx, append([]buildkit.ConnectOption{buildkit.WithAddress(addr), buildkit.WithConnectTimeout(5 * time.Second)}, tc.opts...)...)
			if err == nil {
				c.Close()
				t.Fatal("Connect succeeded")
			}
			var ce *buildkit.ConnectError
			if !errors.As(err, &ce) || ce.Address != addr {
				t.Errorf("Connect = %v (%T), want a *ConnectError for %s", err, err, addr)
			}
			for _, s := range append([]string{addr}, tc.want...) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error does not say %q:\n%v", s, err)
				}
			}
		})
	}
}

func TestConnectErrors(t *testing.T) {
	ctx := connectCtx(t)
	missing := "unix://" + t.TempDir() + "/missing.sock"
	for _, tc := range []struct {
		name string
		opts []buildkit.ConnectOption
		want []string
	}{
		{"bad address", []buildkit.ConnectOption{buildkit.WithAddress("localhost:1234")}, []string{`invalid builder address "localhost:1234"`, "tcp://localhost:1234"}},
		{"bad BUILDKIT_HOST", nil, []string{`invalid builder address "nonsense"`}},
		{"nobody listens", []buildkit.ConnectOption{buildkit.WithAddress(missing)}, []string{"cannot reach BuildKit at " + missing, "no such file or directory"}},
		{"TLS on a unix socket", []buildkit.ConnectOption{buildkit.WithAddress(missing), buildkit.WithTLS("ca.pem", "", "", "")}, []string{"tcp://", missing}},
		{"certificate without key", []buildkit.ConnectOption{buildkit.WithAddress("tcp://127.0.0.1:1"), buildkit.WithTLS("ca.pem", "cert.pem", "", "")}, []string{"both its certificate and its key"}},
		{"unreadable CA", []buildkit.ConnectOption{buildkit.WithAddress("tcp://127.0.0.1:1"), buildkit.WithTLS("/nonexistent/ca.pem", "", "", "")}, []string{"tcp://127.0.0.1:1", "/nonexistent/ca.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(buildkit.BuildkitHostEnv, "nonsense")
			c, err := buildkit.Connect(ctx, tc.opts...)
			if err == nil {
				c.Close()
				t.Fatal("Connect succeeded")
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error does not say %q:\n%v", s, err)
				}
			}
		})
	}
	if _, err := os.Stat(strings.TrimPrefix(missing, "unix://")); err == nil {
		t.Error("Connect created the socket of an address nobody listens on")
	}
}
