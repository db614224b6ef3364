package recipes

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Recipe is a loaded recipe: every block decoded, references resolved, matrix and inherits expanded.
// Blocks keep their declaration order (files in name order, blocks in file order).
type Recipe struct {
	// Path is the file or directory the recipe was loaded from; Dir is the directory relative
	// paths (copy sources, file()) resolve against.
	Path string
	Dir  string
	// Files are the parsed sources by name, for rendering diagnostics with snippets.
	Files map[string]*hcl.File
	// FileNames are the recipe's files in load order.
	FileNames []string

	Variables     []*Variable
	Locals        map[string]cty.Value
	Bases         []*Base
	Repositories  []*Repository
	Drivers       []*Driver
	Runtimes      []*Runtime
	Frameworks    []*Framework
	Images        []*Image
	MachineImages []*MachineImage
	Validates     []*Validate
	Registries    []*Registry
	Groups        []*Group

	vars      map[string]*Variable
	sensitive map[string]struct{}
}

// Variable returns the named variable or nil.
func (r *Recipe) Variable(name string) *Variable { return r.vars[name] }

// Base returns the named base or nil.
func (r *Recipe) Base(name string) *Base {
	return find(r.Bases, name, func(b *Base) string { return b.Name })
}

// Framework returns the named framework or nil.
func (r *Recipe) Framework(name string) *Framework {
	return find(r.Frameworks, name, func(f *Framework) string { return f.Name })
}

// Image returns the named image target or nil.
func (r *Recipe) Image(name string) *Image {
	return find(r.Images, name, func(i *Image) string { return i.Name })
}

// MachineImage returns the named machine image target or nil.
func (r *Recipe) MachineImage(name string) *MachineImage {
	return find(r.MachineImages, name, func(m *MachineImage) string { return m.Name })
}

// Validate returns the named validate block or nil.
func (r *Recipe) Validate(name string) *Validate {
	return find(r.Validates, name, func(v *Validate) string { return v.Name })
}

// Group returns the named group or nil.
func (r *Recipe) Group(name string) *Group {
	return find(r.Groups, name, func(g *Group) string { return g.Name })
}

// Registry returns the registry block for a host, or nil.
func (r *Recipe) Registry(host string) *Registry {
	return find(r.Registries, host, func(g *Registry) string { return g.Host })
}

// Targets lists every buildable target address in declaration order: images, machine images,
// then validate blocks.
func (r *Recipe) Targets() []string {
	var out []string
	for _, i := range r.Images {
		out = append(out, KindImage+"."+i.Name)
	}
	for _, m := range r.MachineImages {
		out = append(out, KindMachineImage+"."+m.Name)
	}
	for _, v := range r.Validates {
		out = append(out, KindValidate+"."+v.Name)
	}
	return out
}

// SensitiveValues returns every string the recipe must never print: values of sensitive
// variables and of every attribute computed from one. Longest first, so a redactor replaces
// a value before any shorter value it contains.
func (r *Recipe) SensitiveValues() []string {
	out := make([]string, 0, len(r.sensitive))
	for s := range r.sensitive {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i]) != len(out[j]) {
			return len(out[i]) > len(out[j])
		}
		return out[i] < out[j]
	})
	return out
}

// Redacted is what replaces a sensitive value in any output.
const Redacted = "(sensitive value)"

// Redact replaces every sensitive value of the recipe in s, as written and as quoted in Go or
// JSON syntax (diagnostics quote values, escaping " and \).
func (r *Recipe) Redact(s string) string {
	if r == nil {
		return s
	}
	for _, v := range r.SensitiveValues() {
		s = strings.ReplaceAll(s, v, Redacted)
		if q := strconv.Quote(v); q[1:len(q)-1] != v {
			s = strings.ReplaceAll(s, q[1:len(q)-1], Redacted)
		}
		if j, err := json.Marshal(v); err == nil && string(j[1:len(j)-1]) != v {
			s = strings.ReplaceAll(s, string(j[1:len(j)-1]), Redacted)
		}
	}
	return s
}

// minDerivedSensitive is the shortest computed value recorded as sensitive. A value computed
// from a secret (a merge, a lookup) can contain short public strings such as "1"; replacing
// those everywhere would corrupt every output, and a string that short protects nothing.
const minDerivedSensitive = 6

// addDerivedSensitive records the string leaves of a value computed from a sensitive one.
func (r *Recipe) addDerivedSensitive(v cty.Value) {
	if r.sensitive == nil {
		r.sensitive = map[string]struct{}{}
	}
	walkStrings(v, func(s string) {
		if len(s) >= minDerivedSensitive {
			r.sensitive[s] = struct{}{}
		}
	})
}

// addSensitive records the string leaves of v as values never to print.
func (r *Recipe) addSensitive(v cty.Value) {
	if r.sensitive == nil {
		r.sensitive = map[string]struct{}{}
	}
	walkStrings(v, func(s string) {
		if s != "" {
			r.sensitive[s] = struct{}{}
		}
	})
}

func walkStrings(v cty.Value, fn func(string)) {
	if v.IsNull() || !v.IsKnown() {
		return
	}
	ty := v.Type()
	switch {
	case ty == cty.String:
		fn(v.AsString())
	case ty == cty.Number || ty == cty.Bool:
		// Numbers and booleans are too short to redact safely; a secret is a string.
	case ty.IsListType() || ty.IsSetType() || ty.IsTupleType() || ty.IsMapType() || ty.IsObjectType():
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			walkStrings(e, fn)
		}
	}
}

func find[T any](items []T, name string, key func(T) string) T {
	var zero T
	for _, it := range items {
		if key(it) == name {
			return it
		}
	}
	return zero
}
