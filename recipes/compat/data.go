package compat

import (
	"bytes"
	"embed"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

//go:embed data/*.csv
var dataFS embed.FS

const (
	frameworksFile = "data/ngc_frameworks.csv"
	gpusFile       = "data/gpus.csv"
	instancesFile  = "data/aws_instances.csv"
)

type instance struct {
	model  string
	count  int
	vendor string
}

type db struct {
	frameworks map[string][]Framework // by name, sorted by release
	gpus       []GPU
	gpuIndex   map[string]int // lookup key -> index into gpus
	instances  map[string]instance
	families   map[string]instance // count unused
}

// tables parses the embedded CSVs once. Malformed embedded data panics: it
// is a build defect, caught by the package tests.
var tables = sync.OnceValue(func() *db {
	d, err := load(func(name string) (io.Reader, error) {
		b, err := dataFS.ReadFile(name)
		return bytes.NewReader(b), err
	})
	if err != nil {
		panic("compat: embedded data: " + err.Error())
	}
	return d
})

func load(open func(string) (io.Reader, error)) (*db, error) {
	d := &db{}
	r, err := open(frameworksFile)
	if err != nil {
		return nil, err
	}
	if d.frameworks, err = parseFrameworks(r); err != nil {
		return nil, fmt.Errorf("%s: %w", frameworksFile, err)
	}
	if r, err = open(gpusFile); err != nil {
		return nil, err
	}
	if d.gpus, d.gpuIndex, err = parseGPUs(r); err != nil {
		return nil, fmt.Errorf("%s: %w", gpusFile, err)
	}
	if r, err = open(instancesFile); err != nil {
		return nil, err
	}
	if d.instances, d.families, err = parseInstances(r); err != nil {
		return nil, fmt.Errorf("%s: %w", instancesFile, err)
	}
	for typ, it := range d.instances {
		if it.vendor != "nvidia" {
			continue
		}
		if _, ok := lookupGPUIndex(d.gpuIndex, it.model); !ok {
			return nil, fmt.Errorf("%s: %s: GPU model %q is not in %s", instancesFile, typ, it.model, gpusFile)
		}
	}
	return d, nil
}

// readCSV reads a table with '#' comment lines and checks its header.
// It returns the records after the header and their line numbers.
func readCSV(r io.Reader, header []string) ([][]string, []int, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.FieldsPerRecord = 0 // the header fixes the field count
	var recs [][]string
	var lines []int
	first := true
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		line, _ := cr.FieldPos(0)
		if first {
			if !slices.Equal(rec, header) {
				return nil, nil, fmt.Errorf("line %d: header is %q, want %q", line, rec, header)
			}
			first = false
			continue
		}
		for i := range rec {
			rec[i] = strings.TrimSpace(rec[i])
		}
		recs = append(recs, rec)
		lines = append(lines, line)
	}
	if first {
		return nil, nil, errors.New("no header row")
	}
	if len(recs) == 0 {
		return nil, nil, errors.New("no data rows")
	}
	return recs, lines, nil
}

var frameworkHeader = []string{"framework", "release", "cuda", "min_driver", "compat_branches", "confidence", "source", "note"}

var cudaRE = regexp.MustCompile(`^[0-9]+\.[0-9]+(\.[0-9]+)?$`)

func parseFrameworks(r io.Reader) (map[string][]Framework, error) {
	recs, lines, err := readCSV(r, frameworkHeader)
	if err != nil {
		return nil, err
	}
	out := map[string][]Framework{}
	for i, rec := range recs {
		f, err := parseFramework(rec)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", lines[i], err)
		}
		out[f.Name] = append(out[f.Name], f)
	}
	for name, list := range out {
		slices.SortFunc(list, func(a, b Framework) int { return strings.Compare(a.Release, b.Release) })
		for i := 1; i < len(list); i++ {
			if list[i].Release == list[i-1].Release {
				return nil, fmt.Errorf("duplicate release %s %s", name, list[i].Release)
			}
		}
	}
	return out, nil
}

func parseFramework(rec []string) (Framework, error) {
	f := Framework{Name: rec[0], Release: rec[1], CUDA: rec[2], Source: rec[6], Note: rec[7]}
	switch f.Name {
	case "pytorch", "tensorflow":
	default:
		return f, fmt.Errorf("unknown framework %q", f.Name)
	}
	if rel, ok := ParseNGCTag(f.Release); !ok || rel != f.Release {
		return f, fmt.Errorf("release %q is not YY.MM", f.Release)
	}
	if !cudaRE.MatchString(f.CUDA) {
		return f, fmt.Errorf("%s: cuda %q is not a version", f.Release, f.CUDA)
	}
	var err error
	if f.MinDriver, err = ParseDriverVersion(rec[3]); err != nil {
		return f, fmt.Errorf("%s: min_driver: %w", f.Release, err)
	}
	if rec[4] != "" {
		seen := map[int]bool{}
		for _, e := range strings.Split(rec[4], ";") {
			e = strings.TrimSpace(e)
			v, ok := strings.CutSuffix(e, "+")
			if !ok {
				return f, fmt.Errorf("%s: compat entry %q must end in '+'", f.Release, e)
			}
			dv, err := ParseDriverVersion(v)
			if err != nil {
				return f, fmt.Errorf("%s: compat entry: %w", f.Release, err)
			}
			if dv.Major >= f.MinDriver.Major {
				return f, fmt.Errorf("%s: compat branch %d is not older than min_driver %s", f.Release, dv.Major, f.MinDriver)
			}
			if seen[dv.Major] {
				return f, fmt.Errorf("%s: compat branch %d listed twice", f.Release, dv.Major)
			}
			seen[dv.Major] = true
			f.CompatBranches = append(f.CompatBranches, dv)
		}
		slices.SortFunc(f.CompatBranches, DriverVersion.Compare)
	}
	switch rec[5] {
	case "release-notes":
	case "derived":
		f.Derived = true
	default:
		return f, fmt.Errorf("%s: confidence %q is neither release-notes nor derived", f.Release, rec[5])
	}
	if err := checkURL(f.Source); err != nil {
		return f, fmt.Errorf("%s: source: %w", f.Release, err)
	}
	return f, nil
}

func checkURL(u string) error {
	if !strings.HasPrefix(u, "https://") || len(u) <= len("https://") || strings.ContainsAny(u, " \t") {
		return fmt.Errorf("%q is not an https URL", u)
	}
	return nil
}

var gpuHeader = []string{"model", "architecture", "compute_capability", "open_modules", "proprietary_modules", "last_branch", "aliases", "sources"}

var ccRE = regexp.MustCompile(`^[0-9]{1,2}\.[0-9]$`)

func parseGPUs(r io.Reader) ([]GPU, map[string]int, error) {
	recs, lines, err := readCSV(r, gpuHeader)
	if err != nil {
		return nil, nil, err
	}
	var gpus []GPU
	index := map[string]int{}
	for i, rec := range recs {
		g, names, err := parseGPU(rec)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", lines[i], err)
		}
		gpus = append(gpus, g)
		for _, n := range names {
			keys := gpuKeys(n)
			if len(keys) == 0 {
				return nil, nil, fmt.Errorf("line %d: empty name", lines[i])
			}
			// The canonical key is the whole normalised name; the stripped
			// form of a name resolves on its own at lookup time.
			key := keys[0]
			if j, dup := index[key]; dup && j != len(gpus)-1 {
				return nil, nil, fmt.Errorf("line %d: name %q already belongs to %s", lines[i], n, gpus[j].Model)
			}
			index[key] = len(gpus) - 1
		}
	}
	// Every model must resolve to itself through the lookup path.
	for i, g := range gpus {
		if j, ok := lookupGPUIndex(index, g.Model); !ok || j != i {
			return nil, nil, fmt.Errorf("model %q does not resolve to itself", g.Model)
		}
	}
	return gpus, index, nil
}

func parseGPU(rec []string) (GPU, []string, error) {
	g := GPU{Model: rec[0], Architecture: rec[1], ComputeCapability: rec[2]}
	if g.Model == "" || g.Architecture == "" {
		return g, nil, errors.New("model and architecture are required")
	}
	if !ccRE.MatchString(g.ComputeCapability) {
		return g, nil, fmt.Errorf("%s: compute capability %q is not MAJOR.MINOR", g.Model, g.ComputeCapability)
	}
	var err error
	if g.OpenModules, err = parseYesNo(rec[3]); err != nil {
		return g, nil, fmt.Errorf("%s: open_modules: %w", g.Model, err)
	}
	if g.ProprietaryModules, err = parseYesNo(rec[4]); err != nil {
		return g, nil, fmt.Errorf("%s: proprietary_modules: %w", g.Model, err)
	}
	if !g.OpenModules && !g.ProprietaryModules {
		return g, nil, fmt.Errorf("%s: no kernel module supports it", g.Model)
	}
	if g.LastDriverBranch, err = strconv.Atoi(rec[5]); err != nil || g.LastDriverBranch < 0 {
		return g, nil, fmt.Errorf("%s: last_branch %q is not a branch number", g.Model, rec[5])
	}
	names := []string{g.Model}
	if rec[6] != "" {
		for _, a := range strings.Split(rec[6], ";") {
			names = append(names, strings.TrimSpace(a))
		}
	}
	for _, u := range strings.Split(rec[7], ";") {
		if err := checkURL(strings.TrimSpace(u)); err != nil {
			return g, nil, fmt.Errorf("%s: sources: %w", g.Model, err)
		}
	}
	return g, names, nil
}

func parseYesNo(s string) (bool, error) {
	switch s {
	case "yes":
		return true, nil
	case "no":
		return false, nil
	}
	return false, fmt.Errorf("%q is neither yes nor no", s)
}

var instanceHeader = []string{"instance_type", "gpu_model", "gpu_count", "vendor", "source", "note"}

var instanceTypeRE = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9-]+$`)

func parseInstances(r io.Reader) (map[string]instance, map[string]instance, error) {
	recs, lines, err := readCSV(r, instanceHeader)
	if err != nil {
		return nil, nil, err
	}
	types := map[string]instance{}
	families := map[string]instance{}
	for i, rec := range recs {
		typ := rec[0]
		if !instanceTypeRE.MatchString(typ) {
			return nil, nil, fmt.Errorf("line %d: instance type %q is not family.size", lines[i], typ)
		}
		if _, dup := types[typ]; dup {
			return nil, nil, fmt.Errorf("line %d: duplicate instance type %s", lines[i], typ)
		}
		it := instance{model: rec[1], vendor: rec[3]}
		if it.model == "" {
			return nil, nil, fmt.Errorf("line %d: %s: gpu_model is required", lines[i], typ)
		}
		if it.count, err = strconv.Atoi(rec[2]); err != nil || it.count < 1 {
			return nil, nil, fmt.Errorf("line %d: %s: gpu_count %q is not a positive number", lines[i], typ, rec[2])
		}
		switch it.vendor {
		case "nvidia", "amd":
		default:
			return nil, nil, fmt.Errorf("line %d: %s: unknown vendor %q", lines[i], typ, it.vendor)
		}
		if err := checkURL(rec[4]); err != nil {
			return nil, nil, fmt.Errorf("line %d: %s: source: %w", lines[i], typ, err)
		}
		family, _, _ := strings.Cut(typ, ".")
		if fam, ok := families[family]; ok && (fam.model != it.model || fam.vendor != it.vendor) {
			return nil, nil, fmt.Errorf("line %d: %s: family %s mixes %s and %s", lines[i], typ, family, fam.model, it.model)
		}
		families[family] = instance{model: it.model, vendor: it.vendor}
		types[typ] = it
	}
	return types, families, nil
}
