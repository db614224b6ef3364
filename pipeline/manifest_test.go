package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var update = flag.Bool("update", false, "rewrite golden files")

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func testRecipe() RecipeRecord {
	return NewRecipeRecord("examples/gpu-node", map[string][]byte{
		"variables.hcl": []byte("variable \"v\" {}\n"),
		"main.hcl":      []byte("image \"trainer\" {}\n"),
	})
}

// fullManifest has one target of each kind, recorded out of order, and a failed run.
func fullManifest() *Manifest {
	m := NewManifest("b-20261128-3f9a1c2e", "v0.1.0", testRecipe(), t0.In(time.FixedZone("CET", 3600)))
	m.RecordTarget("trainer", TargetImage)
	m.RecordImage("trainer", ImageRecord{
		Platform:     "linux/arm64",
		Digest:       "sha256:" + strings.Repeat("b", 64),
		ConfigDigest: "sha256:" + strings.Repeat("d", 64),
		Size:         9_876_543_210,
		Tags:         []string{"registry.example.com/ml/trainer:1.2"},
		PushedTo:     []string{"registry.example.com/ml/trainer@sha256:" + strings.Repeat("b", 64)},
	})
	m.RecordImage("trainer", ImageRecord{
		Platform:     "linux/amd64",
		Digest:       "sha256:" + strings.Repeat("a", 64),
		ConfigDigest: "sha256:" + strings.Repeat("c", 64),
		Size:         10_123_456_789,
		Tags:         []string{"registry.example.com/ml/trainer:1.2"},
		PushedTo:     []string{"registry.example.com/ml/trainer@sha256:" + strings.Repeat("a", 64)},
		OCILayout:    "out/trainer/oci",
		Tarball:      "out/trainer/linux-amd64.tar",
		BuiltOn:      map[string]string{"linux/amd64": "x86"},
	})
	m.RecordTarget("gpu-node", TargetMachineImage)
	m.RecordDisk("gpu-node", DiskRecord{Format: "raw", Path: "out/gpu-node/disk.raw",
		Size: 42_949_672_960, SHA256: strings.Repeat("1", 64)})
	m.RecordDisk("gpu-node", DiskRecord{Format: "qcow2", Path: "out/gpu-node/disk.qcow2",
		Size: 3_221_225_472, SHA256: strings.Repeat("2", 64)})
	m.RecordAMI("gpu-node", AMIRecord{Region: "us-east-1", ImageID: "ami-0123456789abcdef0",
		SnapshotIDs: []string{"snap-0123456789abcdef0"}, Name: "gpu-node-20261128T120000Z"})
	m.RecordAMI("gpu-node", AMIRecord{Region: "eu-west-1", ImageID: "ami-0fedcba9876543210",
		SnapshotIDs: []string{"snap-0fedcba9876543210"}, Name: "gpu-node-20261128T120000Z"})
	m.RecordTarget("gpu", TargetValidate)
	m.RecordValidation("gpu", ValidationRecord{
		Verdict: VerdictFail,
		Report:  json.RawMessage(`{"checks":[{"name":"nvidia_smi","pass":true},{"name":"resnet50","pass":false,"images_per_second":612.5}]}`),
	})
	m.RecordRun(&Result{
		Outcome:  OutcomeFailed,
		Started:  t0,
		Finished: t0.Add(31 * time.Minute),
		Steps: []StepResult{
			{ID: "image.trainer/build", Status: StatusSucceeded, Started: t0, Duration: 312_400 * time.Millisecond,
				Cleanup: &CleanupResult{Outcome: OutcomeFailed, Status: StatusSucceeded, Duration: time.Millisecond}},
			{ID: "validate.gpu/resnet50", Status: StatusFailed, Started: t0.Add(6 * time.Minute),
				Duration: 1500 * time.Second, Err: errors.New("below reference"),
				Cleanup: &CleanupResult{Outcome: OutcomeFailed, Status: StatusFailed, Duration: 2 * time.Second}},
			{ID: "machine_image.gpu-node/ami-copy", Status: StatusSkipped},
		},
	})
	return m
}

// minimalManifest is a build cancelled before any step ran.
func minimalManifest() *Manifest {
	m := NewManifest("b-20261128-00000001", "v0.1.0", NewRecipeRecord("recipe.hcl", map[string][]byte{
		"recipe.hcl": []byte("image \"trainer\" {}\n"),
	}), t0)
	m.RecordRun(&Result{
		Outcome:  OutcomeCancelled,
		Started:  t0,
		Finished: t0.Add(1500 * time.Microsecond),
		Steps:    []StepResult{{ID: "image.trainer/build", Status: StatusSkipped}},
	})
	return m
}

func TestManifestGolden(t *testing.T) {
	for name, m := range map[string]*Manifest{"full": fullManifest(), "minimal": minimalManifest()} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "manifest.json")
			if err := m.WriteFile(path); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "manifest", name+".json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if d := cmp.Diff(string(want), string(got)); d != "" {
				t.Errorf("%s differs (-want +got; go test -update rewrites it):\n%s", golden, d)
			}
		})
	}
}

// rawJSON compares json.RawMessage by meaning: written indented, it reads back with different spaces.
var rawJSON = cmp.Transformer("compactJSON", func(r json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, r); err != nil {
		return "invalid: " + string(r)
	}
	return b.String()
})

func TestManifestRoundTrip(t *testing.T) {
	for name, m := range map[string]*Manifest{"full": fullManifest(), "minimal": minimalManifest()} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "manifest.json")
			if err := m.WriteFile(path); err != nil {
				t.Fatal(err)
			}
			got, err := ReadManifestFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(m, got, cmpopts.IgnoreUnexported(Manifest{}), rawJSON); d != "" {
				t.Errorf("read back differs (-wrote +read):\n%s", d)
			}
			// And it writes back byte for byte.
			path2 := filepath.Join(t.TempDir(), "again.json")
			if err := got.WriteFile(path2); err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(path)
			b, _ := os.ReadFile(path2)
			if !bytes.Equal(a, b) {
				t.Errorf("rewriting a manifest read back changed it")
			}
		})
	}
}

func TestManifestReadSchemaVersion(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		json string
		ok   bool
	}{
		{`{"schema_version":1,"build_id":"b","a_field_from_the_future":{"x":1},"targets":{"t":{"kind":"image","new":1}}}`, true},
		{`{"schema_version":2,"build_id":"b"}`, false},
		{`{"build_id":"b"}`, false},
		{`not json`, false},
	} {
		path := filepath.Join(dir, "m.json")
		if err := os.WriteFile(path, []byte(tt.json), 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := ReadManifestFile(path)
		if (err == nil) != tt.ok {
			t.Errorf("ReadManifestFile(%s) = %v; want ok=%v", tt.json, err, tt.ok)
		}
		if err == nil && (m.Targets["t"].Kind != TargetImage || m.Steps == nil) {
			t.Errorf("ReadManifestFile(%s) = %+v", tt.json, m)
		}
	}
}

func TestManifestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "manifest.json")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := minimalManifest()
	if err := m.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !bytes.HasPrefix(data, []byte("{\n  \"schema_version\": 1,\n")) || !bytes.HasSuffix(data, []byte("}\n")) {
		t.Errorf("unexpected manifest file:\n%s", data)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files left in the directory: %v", entries)
	}

	// A failed write leaves nothing behind.
	if err := m.WriteFile(filepath.Join(dir, "missing", "manifest.json")); err == nil {
		t.Errorf("WriteFile into a missing directory succeeded")
	}
	if err := m.WriteFile(filepath.Join(dir, "manifest.json", "x")); err == nil {
		t.Errorf("WriteFile under a file succeeded")
	}
	entries, _ = os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files left in the directory after failed writes: %v", entries)
	}
}

func TestManifestConcurrentRecord(t *testing.T) {
	m := NewManifest("b", "v0", RecipeRecord{}, t0)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			m.RecordTarget("trainer", TargetImage)
			m.RecordImage("trainer", ImageRecord{Platform: fmt.Sprintf("linux/arch%02d", i)})
			m.RecordDisk(fmt.Sprintf("node%d", i%3), DiskRecord{Format: "raw", Path: fmt.Sprint(i)})
			m.RecordAMI("ami", AMIRecord{Region: fmt.Sprintf("r%02d", 19-i)})
			if _, err := json.Marshal(m); err != nil {
				t.Error(err)
			}
		})
	}
	guard(t, wg.Wait)
	imgs := m.Target("trainer").Images
	if len(imgs) != 20 {
		t.Fatalf("%d images recorded, want 20", len(imgs))
	}
	for i, img := range imgs {
		if want := fmt.Sprintf("linux/arch%02d", i); img.Platform != want {
			t.Errorf("images[%d].Platform = %q, want %q: images are kept sorted", i, img.Platform, want)
		}
	}
	if amis := m.Target("ami").AMIs; len(amis) != 20 || amis[0].Region != "r00" {
		t.Errorf("AMIs not sorted by region: %v", amis)
	}
}

func TestManifestNewRecipeRecord(t *testing.T) {
	// Values from sha256sum(1), as docs/manifest.md tells users to check them:
	//   sha256sum $(ls *.hcl | LC_ALL=C sort) | sha256sum
	want := RecipeRecord{
		Path:   "examples/gpu-node",
		SHA256: "7e9801f1a4dbee566a358d59c3709c74702bf8da3953da66ff4d12230dc63b71",
		Files: []RecipeFile{
			{Path: "main.hcl", SHA256: "a4f1c5c56ce163a702657a7746534335821c24c20760018bda56be1a2cf332e3"},
			{Path: "variables.hcl", SHA256: "d71e2793b65332c6443047195e88504df6cee86ebd083f23c296d5e2a1dc8dfc"},
		},
	}
	diff(t, "RecipeRecord", want, testRecipe())
}

// TestManifestDocExamples keeps docs/manifest.md's examples equal to the golden files.
func TestManifestDocExamples(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "manifest.md"))
	if err != nil {
		t.Skipf("docs/manifest.md not found: %v", err)
	}
	for _, name := range []string{"full", "minimal"} {
		golden, err := os.ReadFile(filepath.Join("testdata", "manifest", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(doc, append(append([]byte("```json\n"), golden...), "```\n"...)) {
			t.Errorf("docs/manifest.md does not show testdata/manifest/%s.json as it is; update the example", name)
		}
	}
}
