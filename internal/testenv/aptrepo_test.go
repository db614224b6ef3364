package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestStartAptRepo serves a one-package repository and checks it as apt would: InRelease
// verifies with the key (gpgv), the Packages index it lists has the right SHA-256, and the
// package it lists downloads with the size and SHA-256 the index gives.
func TestStartAptRepo(t *testing.T) {
	gpgv := Tool(t, "gpgv")
	gpg := Tool(t, "gpg")
	payload := filepath.Join(t.TempDir(), "hello")
	os.WriteFile(payload, []byte("#!/bin/sh\necho hello\n"), 0o755)
	repo := StartAptRepo(t, Deb{Name: "hello", Version: "1.0-1", Description: "test", Files: map[string]string{"/usr/bin/hello": payload}})

	get := func(name string) []byte {
		resp, err := http.Get(repo.URL + name)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", name, resp.Status)
		}
		data, _ := io.ReadAll(resp.Body)
		return data
	}
	dir := t.TempDir()
	keyring := filepath.Join(dir, "key.gpg")
	dearmor := exec.Command(gpg, "--batch", "--yes", "--dearmor", "--output", keyring)
	dearmor.Stdin = strings.NewReader(repo.Key)
	if out, err := dearmor.CombinedOutput(); err != nil {
		t.Fatalf("gpg --dearmor: %v\n%s", err, out)
	}
	inRelease := filepath.Join(dir, "InRelease")
	os.WriteFile(inRelease, get("InRelease"), 0o644)
	if out, err := exec.Command(gpgv, "--keyring", keyring, inRelease).CombinedOutput(); err != nil {
		t.Fatalf("InRelease does not verify with the repository's key: %v\n%s", err, out)
	}
	packages := get("Packages")
	sum := sha256.Sum256(packages)
	if !strings.Contains(string(get("InRelease")), hex.EncodeToString(sum[:])) {
		t.Error("InRelease does not list the SHA-256 of Packages")
	}
	var file, want string
	for _, line := range strings.Split(string(packages), "\n") {
		if v, ok := strings.CutPrefix(line, "Filename: ./"); ok {
			file = v
		}
		if v, ok := strings.CutPrefix(line, "SHA256: "); ok {
			want = v
		}
	}
	deb := get(file)
	got := sha256.Sum256(deb)
	if hex.EncodeToString(got[:]) != want {
		t.Errorf("%s: SHA-256 %x, Packages says %s", file, got, want)
	}
}
