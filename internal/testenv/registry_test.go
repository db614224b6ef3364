package testenv

import (
	"net/http"
	"os"
	"strings"
	"testing"
)

func get(t *testing.T, c *http.Client, url, user, password string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestStartRegistryTLSAuth(t *testing.T) {
	reg := StartRegistry(t)
	if !strings.HasPrefix(reg.Host, "127.0.0.1:") || reg.URL() != "https://"+reg.Host {
		t.Errorf("Host %q, URL %q: want https on 127.0.0.1", reg.Host, reg.URL())
	}
	if reg.Username == "" || len(reg.Password) < 16 {
		t.Errorf("credentials %q/%q: want a user and a random password", reg.Username, reg.Password)
	}
	pem, err := os.ReadFile(reg.CAFile)
	if err != nil || !strings.Contains(string(pem), "BEGIN CERTIFICATE") {
		t.Fatalf("CAFile %s: %v %q", reg.CAFile, err, pem)
	}

	v2 := reg.URL() + "/v2/"
	if got := get(t, reg.Client, v2, "", ""); got != http.StatusUnauthorized {
		t.Errorf("GET /v2/ without credentials = %d, want 401", got)
	}
	if got := get(t, reg.Client, v2, reg.Username, reg.Password); got != http.StatusOK {
		t.Errorf("GET /v2/ with the credentials = %d, want 200", got)
	}
	if got := get(t, reg.Client, v2, reg.Username, reg.Password+"x"); got != http.StatusUnauthorized {
		t.Errorf("GET /v2/ with a wrong password = %d, want 401", got)
	}
	// The certificate names localhost too.
	if got := get(t, reg.Client, strings.Replace(v2, "127.0.0.1", "localhost", 1), reg.Username, reg.Password); got != http.StatusOK {
		t.Errorf("GET https://localhost:<port>/v2/ = %d, want 200", got)
	}
	// A client that does not trust the test CA fails the handshake.
	if _, err := http.DefaultClient.Get(v2); err == nil {
		t.Error("GET with the system roots only succeeded; the registry's certificate should come from the test CA")
	}
}

func TestStartRegistryPlainHTTP(t *testing.T) {
	reg := StartRegistry(t, RegistryPlainHTTP())
	if reg.URL() != "http://"+reg.Host || reg.TLS() || reg.CAFile != "" || reg.Username != "" {
		t.Fatalf("plain registry: URL %q, CAFile %q, user %q", reg.URL(), reg.CAFile, reg.Username)
	}
	if got := get(t, reg.Client, reg.URL()+"/v2/", "", ""); got != http.StatusOK {
		t.Errorf("GET /v2/ = %d, want 200", got)
	}
}

func TestRegistryCredentials(t *testing.T) {
	reg := StartRegistry(t, RegistryCredentials("alice", "s3cret-canary"))
	if got := get(t, reg.Client, reg.URL()+"/v2/", "alice", "s3cret-canary"); got != http.StatusOK {
		t.Errorf("GET /v2/ as alice = %d, want 200", got)
	}
}
