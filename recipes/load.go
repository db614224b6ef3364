package recipes

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// Options are the inputs of [Load] that do not come from the recipe files.
type Options struct {
	// Vars are -var flags, "name=value", applied in order after everything else.
	Vars []string
	// VarFiles are -var-file paths, applied in order after the environment.
	VarFiles []string
	// Env is the environment searched for GPUFORGE_VAR_name. The default (nil) is os.Environ().
	Env []string
	// Now is what timestamp() returns. The default is SOURCE_DATE_EPOCH when set, else the
	// current time.
	Now time.Time
}

// Load reads a recipe from a file or a directory of *.hcl files, evaluates it and checks it.
// The returned Recipe is never nil (its Files render the diagnostics); it is only fit to build
// from when the diagnostics have no errors.
func Load(path string, opts Options) (*Recipe, hcl.Diagnostics) {
	l := newLoader(path, opts)
	files, diags := recipeFiles(path)
	if diags.HasErrors() {
		return l.r, diags
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Failed to read recipe file",
				Detail:   fmt.Sprintf("Cannot read %s: %s.", f, unwrapPathError(err)),
				Subject:  &hcl.Range{Filename: f},
			})
			continue
		}
		diags = append(diags, l.addSource(f, src)...)
	}
	diags = append(diags, l.load()...)
	return l.r, l.sorted(dedupe(diags))
}

// LoadSource loads a recipe held in memory, as if read from filename (tests and fuzzing).
func LoadSource(filename string, src []byte, opts Options) (*Recipe, hcl.Diagnostics) {
	l := newLoader(filename, opts)
	diags := l.addSource(filename, src)
	diags = append(diags, l.load()...)
	return l.r, l.sorted(dedupe(diags))
}

// sorted orders diagnostics as a reader meets them: by file, then position; those without a
// range (variables from the command line) first.
func (l *loader) sorted(diags hcl.Diagnostics) hcl.Diagnostics {
	fileIdx := map[string]int{}
	for i, f := range l.r.FileNames {
		fileIdx[f] = i + 1
	}
	key := func(d *hcl.Diagnostic) (int, int) {
		if d.Subject == nil {
			return -1, 0
		}
		return fileIdx[d.Subject.Filename], d.Subject.Start.Byte
	}
	sort.SliceStable(diags, func(i, j int) bool {
		fi, bi := key(diags[i])
		fj, bj := key(diags[j])
		if fi != fj {
			return fi < fj
		}
		return bi < bj
	})
	return diags
}

// recipeFiles lists the files of a recipe path: the file itself, or a directory's *.hcl in name order.
func recipeFiles(path string) ([]string, hcl.Diagnostics) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Recipe not found",
			Detail:   fmt.Sprintf("Cannot read %s: %s.", path, unwrapPathError(err)),
			Subject:  &hcl.Range{Filename: path},
		}}
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	matches, _ := filepath.Glob(filepath.Join(path, "*.hcl"))
	sort.Strings(matches)
	if len(matches) == 0 {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "No recipe files",
			Detail:   fmt.Sprintf("The directory %s holds no *.hcl files.", path),
			Subject:  &hcl.Range{Filename: path},
		}}
	}
	return matches, nil
}

type loader struct {
	opts   Options
	parser *hclparse.Parser
	r      *Recipe
	funcs  map[string]function.Function
	bodies []*hcl.File

	blocks    map[string]map[string]*hcl.Block // kind -> name -> block
	order     []*hcl.Block                     // blocks in declaration order
	localDefs map[string]*hcl.Attribute
	localList []string
	locals    map[string]cty.Value
	values    map[string]map[string]cty.Value // kind -> name -> value for references
	tainted   map[string]bool                 // addresses computed from a sensitive value
	failed    map[string]bool                 // nodes not evaluated (bad references, cycles)
	early     hcl.Diagnostics                 // found before loading (the environment)
}

func newLoader(path string, opts Options) *loader {
	now, badEpoch := opts.Now, ""
	if now.IsZero() {
		now = time.Now()
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			sec, err := strconv.ParseInt(s, 10, 64)
			if err == nil {
				now = time.Unix(sec, 0)
			} else {
				badEpoch = s
			}
		}
	}
	dir := path
	if st, err := os.Stat(path); err != nil || !st.IsDir() {
		dir = filepath.Dir(path)
	}
	l := &loader{
		opts:      opts,
		parser:    hclparse.NewParser(),
		funcs:     functions(dir, now),
		blocks:    map[string]map[string]*hcl.Block{},
		localDefs: map[string]*hcl.Attribute{},
		locals:    map[string]cty.Value{},
		values:    map[string]map[string]cty.Value{},
		tainted:   map[string]bool{},
		failed:    map[string]bool{},
	}
	l.r = &Recipe{Path: path, Dir: dir, Files: l.parser.Files(), Locals: l.locals, vars: map[string]*Variable{}}
	if badEpoch != "" {
		l.early = append(l.early, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  "Invalid SOURCE_DATE_EPOCH",
			Detail:   fmt.Sprintf("SOURCE_DATE_EPOCH=%q is not a number of seconds since 1970; timestamp() uses the current time instead.", badEpoch),
			Subject:  &hcl.Range{Filename: "<environment variable SOURCE_DATE_EPOCH>"},
		})
	}
	return l
}

func (l *loader) addSource(filename string, src []byte) hcl.Diagnostics {
	f, diags := l.parser.ParseHCL(src, filename)
	l.r.FileNames = append(l.r.FileNames, filename)
	if f != nil {
		l.bodies = append(l.bodies, f)
	}
	return diags
}

// load runs the phases: structure, variables, locals and blocks in reference order, resolution,
// inherits, semantic checks. Each phase keeps going after errors so one run reports everything.
func (l *loader) load() hcl.Diagnostics {
	diags := l.early
	var varBlocks []*hcl.Block
	for _, f := range l.bodies {
		content, cdiags := f.Body.Content(rootSchema)
		diags = append(diags, cdiags...)
		if content == nil {
			continue
		}
		for _, b := range content.Blocks {
			switch b.Type {
			case KindVariable:
				varBlocks = append(varBlocks, b)
			case KindLocals:
				attrs, adiags := b.Body.JustAttributes()
				diags = append(diags, adiags...)
				for _, a := range sortedAttrs(attrs) {
					if prev, dup := l.localDefs[a.Name]; dup {
						diags = append(diags, duplicateDiag("local value", a.Name, prev.Range, a.Range))
						continue
					}
					l.localDefs[a.Name] = a
					l.localList = append(l.localList, a.Name)
				}
			default:
				name := b.Labels[0]
				if l.blocks[b.Type] == nil {
					l.blocks[b.Type] = map[string]*hcl.Block{}
				}
				if prev, dup := l.blocks[b.Type][name]; dup {
					diags = append(diags, duplicateDiag(b.Type, name, prev.DefRange, b.DefRange))
					continue
				}
				if !validName(name) {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  fmt.Sprintf("Invalid %s name", b.Type),
						Detail:   "A block name must start with a letter or underscore and contain only letters, digits, underscores and dashes, so that it can be referenced as " + b.Type + ".NAME.",
						Subject:  b.LabelRanges[0].Ptr(),
					})
					continue
				}
				l.blocks[b.Type][name] = b
				l.order = append(l.order, b)
			}
		}
	}

	diags = append(diags, l.checkFunctionNames()...)
	diags = append(diags, l.decodeVariables(varBlocks)...)
	diags = append(diags, l.checkValidations()...)
	diags = append(diags, l.evaluate()...)
	diags = append(diags, l.link()...)
	diags = append(diags, l.check()...)
	return diags
}

func validName(s string) bool { return hclsyntax.ValidIdentifier(s) }

func sortedAttrs(attrs hcl.Attributes) []*hcl.Attribute {
	out := make([]*hcl.Attribute, 0, len(attrs))
	for _, a := range attrs {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Range.Start.Byte < out[j].Range.Start.Byte })
	return out
}

func duplicateDiag(what, name string, first, second hcl.Range) *hcl.Diagnostic {
	article := "A"
	if strings.ContainsRune("aeiou", rune(what[0])) {
		article = "An"
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("Duplicate %s %q", what, name),
		Detail:   fmt.Sprintf("%s %s named %q was already declared at %s. Names must be unique within a recipe, across all its files.", article, strings.ReplaceAll(what, "_", " "), name, first),
		Subject:  second.Ptr(),
	}
}

// isSet reports whether an optional expression field was written in the recipe (gohcl fills
// missing ones with a synthetic null expression, which is not an hclsyntax node).
func isSet(expr hcl.Expression) bool {
	if expr == nil {
		return false
	}
	_, ok := expr.(hclsyntax.Expression)
	return ok
}

func traverserName(t hcl.Traverser) string {
	switch t := t.(type) {
	case hcl.TraverseAttr:
		return t.Name
	case hcl.TraverseRoot:
		return t.Name
	case hcl.TraverseIndex:
		if t.Key.Type() == cty.String {
			return t.Key.AsString()
		}
	}
	return ""
}

func leadingInt(s string) int {
	end := 0
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	n, _ := strconv.Atoi(s[:end])
	return n
}

// dedupe drops diagnostics that repeat an earlier one with the same summary and subject, and
// those HCL reports again for a reference we already reported as undeclared.
func dedupe(diags hcl.Diagnostics) hcl.Diagnostics {
	seen := map[string]bool{}
	var refRanges []hcl.Range
	var out hcl.Diagnostics
	cascade := diags.HasErrors()
	for _, d := range diags {
		// An unknown value only comes from an expression that already failed, so HCL's
		// "value must be known" repeats an error reported at its cause.
		if cascade && d.Detail == "Unsuitable value: value must be known" {
			continue
		}
		key := d.Summary
		if d.Subject != nil {
			key += "@" + d.Subject.String()
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		if d.Subject != nil && (d.Summary == "Unknown variable" || d.Summary == "Unsupported attribute") {
			covered := false
			for _, r := range refRanges {
				if r.Filename == d.Subject.Filename && r.Start.Byte <= d.Subject.Start.Byte && d.Subject.End.Byte <= r.End.Byte {
					covered = true
				}
			}
			if covered {
				continue
			}
		}
		if d.Subject != nil && strings.HasPrefix(d.Summary, "Reference to undeclared") {
			refRanges = append(refRanges, *d.Subject)
		}
		out = append(out, d)
	}
	return out
}

// checkFunctionNames reports calls to functions that do not exist, before any evaluation, with a
// suggestion chosen deterministically (HCL's own depends on map order).
func (l *loader) checkFunctionNames() hcl.Diagnostics {
	var diags hcl.Diagnostics
	names := mapKeys(l.funcs)
	for _, f := range l.bodies {
		body, ok := f.Body.(*hclsyntax.Body)
		if !ok {
			continue
		}
		// Type constraints (type = list(string)) look like calls but are not evaluated.
		var typeExprs []hcl.Range
		for _, b := range body.Blocks {
			if a := b.Body.Attributes["type"]; b.Type == KindVariable && a != nil {
				typeExprs = append(typeExprs, a.Expr.Range())
			}
		}
		_ = hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
			call, ok := n.(*hclsyntax.FunctionCallExpr)
			if !ok {
				return nil
			}
			for _, r := range typeExprs {
				if r.Overlaps(call.NameRange) {
					return nil
				}
			}
			if _, known := l.funcs[call.Name]; !known {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Call to unknown function",
					Detail:   fmt.Sprintf("There is no function named %q.%s", call.Name, didYouMean(call.Name, names)),
					Subject:  call.NameRange.Ptr(),
				})
			}
			return nil
		})
	}
	return diags
}
