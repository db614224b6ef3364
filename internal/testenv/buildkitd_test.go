package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
)

func TestStartBuildkitd(t *testing.T) {
	addr := StartBuildkitd(t)
	if !strings.HasPrefix(addr, "unix:///") {
		t.Fatalf("StartBuildkitd = %q, want a unix:// address", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("Info from %s: %v", addr, err)
	}
	if want := PinnedVersion(t, "tools/go.mod", buildkitModule); info.BuildkitVersion.Version != want {
		t.Errorf("buildkitd at %s reports %s, want %s", addr, info.BuildkitVersion.Version, want)
	}
	workers, err := c.ListWorkers(ctx)
	if err != nil || len(workers) != 1 {
		t.Fatalf("ListWorkers = %d workers, %v; want the OCI worker", len(workers), err)
	}
	if got := workers[0].Labels["org.mobyproject.buildkit.worker.executor"]; got != "oci" {
		t.Errorf("worker executor = %q, want oci", got)
	}
}

func TestWriteTLSFiles(t *testing.T) {
	files := WriteTLSFiles(t, t.TempDir())
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(files.CACert)
	if err != nil || !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("reading the CA %s: %v", files.CACert, err)
	}
	for _, tc := range []struct {
		cert, key string
		usage     x509.ExtKeyUsage
		name      string
	}{
		{files.ServerCert, files.ServerKey, x509.ExtKeyUsageServerAuth, "127.0.0.1"},
		{files.ClientCert, files.ClientKey, x509.ExtKeyUsageClientAuth, ""},
	} {
		if _, err := tls.LoadX509KeyPair(tc.cert, tc.key); err != nil {
			t.Errorf("LoadX509KeyPair(%s, %s): %v", tc.cert, tc.key, err)
		}
		data, err := os.ReadFile(tc.cert)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(data)
		if block == nil {
			t.Fatalf("%s holds no PEM block", tc.cert)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		opts := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{tc.usage}, DNSName: tc.name}
		if _, err := cert.Verify(opts); err != nil {
			t.Errorf("%s does not verify against the test CA for %v: %v", tc.cert, tc.usage, err)
		}
	}
}
