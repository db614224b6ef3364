package main

import (
	"strings"
	"testing"
)

// TestAMIGCCommand runs `gpuforge ami gc` against awsemu: without --region it is a usage error;
// on an account where gpuforge left nothing it says so and exits 0, in a dry run and for real.
// (Deleting leftovers is tested in builders/ami against the same endpoint.)
func TestAMIGCCommand(t *testing.T) {
	testEnv(t)
	srv := startAWSEmu(t)
	if code, _, stderr := runCLI(t, "ami", "gc", "--aws-endpoint", srv.URL()); code != ExitUsage || !strings.Contains(stderr, "--region") {
		t.Errorf("ami gc without --region: exit %d, stderr %q; want %d naming --region", code, stderr, ExitUsage)
	}
	for _, dry := range []bool{true, false} {
		args := []string{"ami", "gc", "--aws-endpoint", srv.URL(), "--region", "us-east-1", "--region", "eu-west-1"}
		if dry {
			args = append(args, "--dry-run")
		}
		code, stdout, stderr := runCLI(t, args...)
		if code != ExitOK || stdout != "nothing to remove\n" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 0 and nothing to remove", args, code, stdout, stderr)
		}
	}
	if n := srv.Stats().Requests["DescribeImages"]; n == 0 {
		t.Errorf("ami gc made no DescribeImages call: %v", srv.Stats().Requests)
	}
}

// TestClientToken: the snapshot's idempotency token is the same for the same disk and AMI name
// (so a rerun resumes), differs otherwise, and fits StartSnapshot's 64 characters.
func TestClientToken(t *testing.T) {
	a := clientToken("gpu-node", "aa")
	if a != clientToken("gpu-node", "aa") {
		t.Error("the token of the same disk and name changed")
	}
	if a == clientToken("gpu-node", "ab") || a == clientToken("gpu-node-2", "aa") {
		t.Error("different disks or names share a token")
	}
	if len(a) > 64 || !strings.HasPrefix(a, "gpuforge-") {
		t.Errorf("token %q: want gpuforge-… of at most 64 characters", a)
	}
}
