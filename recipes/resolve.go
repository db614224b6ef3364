package recipes

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// refsIn reads an attribute that holds block references, a single one or a list. Elements that
// are not block references are evaluated as strings when allowString is set (image references
// written out, target names in groups); otherwise they are errors.
func (l *loader) refsIn(expr hcl.Expression, attr string, kinds []string, allowString bool, ctx *hcl.EvalContext) ([]Source, hcl.Diagnostics) {
	if !isSet(expr) {
		return nil, nil
	}
	elems := []hcl.Expression{expr}
	if tuple, ok := expr.(*hclsyntax.TupleConsExpr); ok {
		elems = elems[:0]
		for _, e := range tuple.Exprs {
			elems = append(elems, e)
		}
	}
	var out []Source
	var diags hcl.Diagnostics
	for _, e := range elems {
		rng := e.Range()
		if tr, d := hcl.AbsTraversalForExpr(e); !d.HasErrors() && contains(referableKinds, tr.RootName()) {
			if len(tr) != 2 {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  fmt.Sprintf("Invalid reference in %s", attr),
					Detail:   fmt.Sprintf("%s takes a whole block, like %s.NAME, not one of its attributes.", attr, kinds[0]),
					Subject:  rng.Ptr(),
				})
				continue
			}
			kind, name := tr.RootName(), traverserName(tr[1])
			if !contains(kinds, kind) {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  fmt.Sprintf("Invalid reference in %s", attr),
					Detail:   fmt.Sprintf("%s refers to %s blocks (%s); %s.%s is a %s block.", attr, orList(kinds), strings.Join(kinds, ", "), kind, name, kind),
					Subject:  rng.Ptr(),
				})
				continue
			}
			out = append(out, Source{Ref: &Ref{Kind: kind, Name: name, Range: rng}, Range: rng})
			continue
		}
		if tr, d := hcl.AbsTraversalForExpr(e); !d.HasErrors() {
			if _, known := lookupVar(ctx, tr.RootName()); !known {
				continue // an unknown name, reported with the reference graph
			}
		}
		if !allowString {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Invalid %s", attr),
				Detail:   fmt.Sprintf("%s takes references to %s blocks, like %s.NAME.", attr, orList(kinds), kinds[0]),
				Subject:  rng.Ptr(),
			})
			continue
		}
		v, d := e.Value(ctx)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		// A list-valued expression (a variable holding a list) contributes each element.
		if ty := v.Type(); (ty.IsListType() || ty.IsTupleType() || ty.IsSetType()) && v.IsKnown() && !v.IsNull() {
			for _, ev := range v.AsValueSlice() {
				s, ok := asString(ev)
				if !ok {
					diags = append(diags, stringWanted(attr, rng))
					continue
				}
				out = append(out, Source{Image: s, Range: rng})
			}
			continue
		}
		s, ok := asString(v)
		if !ok {
			diags = append(diags, stringWanted(attr, rng))
			continue
		}
		out = append(out, Source{Image: s, Range: rng})
	}
	return out, diags
}

func asString(v cty.Value) (string, bool) {
	if v.IsNull() || !v.IsWhollyKnown() {
		return "", false
	}
	s, err := convert.Convert(v, cty.String)
	if err != nil {
		return "", false
	}
	return s.AsString(), true
}

func stringWanted(attr string, rng hcl.Range) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("Invalid %s", attr),
		Detail:   fmt.Sprintf("Each element of %s must be a block reference or a string.", attr),
		Subject:  rng.Ptr(),
	}
}

func orList(kinds []string) string {
	if len(kinds) == 1 {
		return kinds[0]
	}
	return strings.Join(kinds[:len(kinds)-1], ", ") + " or " + kinds[len(kinds)-1]
}

// single reads an attribute that takes exactly one value.
func (l *loader) single(expr hcl.Expression, attr string, kinds []string, allowString bool, ctx *hcl.EvalContext) (Source, hcl.Diagnostics) {
	srcs, diags := l.refsIn(expr, attr, kinds, allowString, ctx)
	if _, isList := expr.(*hclsyntax.TupleConsExpr); isList || len(srcs) > 1 {
		return Source{}, append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Invalid %s", attr),
			Detail:   fmt.Sprintf("%s takes one value, not a list.", attr),
			Subject:  expr.Range().Ptr(),
		})
	}
	if len(srcs) == 0 {
		return Source{}, diags
	}
	return srcs[0], diags
}

func (l *loader) repositories(srcs []Source) []*Repository {
	var out []*Repository
	for _, s := range srcs {
		if s.Ref != nil {
			out = append(out, &Repository{Name: s.Ref.Name}) // filled in by link()
		}
	}
	return out
}

func (l *loader) resolveImage(v *Image, ctx *hcl.EvalContext) hcl.Diagnostics {
	var diags hcl.Diagnostics
	var d hcl.Diagnostics
	v.From, d = l.single(v.FromExpr, "from", []string{KindBase, KindFramework, KindImage}, true, ctx)
	diags = append(diags, d...)
	repos, d := l.refsIn(v.ReposExpr, "repositories", []string{KindRepository}, false, ctx)
	diags = append(diags, d...)
	v.Repositories = l.repositories(repos)
	parents, d := l.refsIn(v.InheritsExpr, "inherits", []string{KindImage}, false, ctx)
	diags = append(diags, d...)
	for _, p := range parents {
		if p.Ref != nil {
			v.Inherits = append(v.Inherits, p.Ref.Name)
		}
	}
	return diags
}

func (l *loader) resolveMachineImage(v *MachineImage, ctx *hcl.EvalContext) hcl.Diagnostics {
	var diags hcl.Diagnostics
	var d hcl.Diagnostics
	v.From, d = l.single(v.FromExpr, "from", []string{KindBase, KindImage}, true, ctx)
	diags = append(diags, d...)
	repos, d := l.refsIn(v.ReposExpr, "repositories", []string{KindRepository}, false, ctx)
	diags = append(diags, d...)
	v.Repositories = l.repositories(repos)
	drv, d := l.single(v.DriverExpr, "driver", []string{KindDriver}, false, ctx)
	diags = append(diags, d...)
	if drv.Ref != nil {
		v.Driver = &Driver{Name: drv.Ref.Name}
	}
	rts, d := l.refsIn(v.RuntimesExpr, "runtimes", []string{KindRuntime}, false, ctx)
	diags = append(diags, d...)
	for _, s := range rts {
		v.Runtimes = append(v.Runtimes, &Runtime{Name: s.Ref.Name})
	}
	v.Preload, d = l.refsIn(v.PreloadExpr, "preload", []string{KindFramework, KindImage}, true, ctx)
	diags = append(diags, d...)
	return diags
}

// resolveRepositoryOf resolves the repository attribute of a driver or runtime block.
func (l *loader) resolveRepositoryOf(expr hcl.Expression, dst **Repository, ctx *hcl.EvalContext) hcl.Diagnostics {
	if !isSet(expr) {
		return nil
	}
	src, diags := l.single(expr, "repository", []string{KindRepository}, false, ctx)
	if src.Ref != nil {
		*dst = &Repository{Name: src.Ref.Name} // filled in by link()
	}
	return diags
}

func (l *loader) resolveValidate(v *Validate, ctx *hcl.EvalContext) hcl.Diagnostics {
	t, diags := l.single(v.TargetExpr, "target", []string{KindImage, KindMachineImage}, false, ctx)
	if t.Ref != nil {
		v.Target = *t.Ref
	}
	return diags
}

func (l *loader) resolveGroup(v *Group, ctx *hcl.EvalContext) hcl.Diagnostics {
	srcs, diags := l.refsIn(v.TargetsExpr, "targets", []string{KindImage, KindMachineImage, KindValidate, KindGroup}, true, ctx)
	for _, s := range srcs {
		if s.Ref != nil {
			v.Targets = append(v.Targets, s.Ref.Addr())
		} else {
			v.Targets = append(v.Targets, s.Image) // a name; expanded by link()
		}
	}
	return diags
}

// link runs once every block is decoded: it puts blocks in declaration order, points resolved
// references at the blocks themselves, applies inherits and expands groups.
func (l *loader) link() hcl.Diagnostics {
	var diags hcl.Diagnostics
	fileIdx := map[string]int{}
	for i, f := range l.r.FileNames {
		fileIdx[f] = i
	}
	less := func(a, b hcl.Range) bool {
		if a.Filename != b.Filename {
			return fileIdx[a.Filename] < fileIdx[b.Filename]
		}
		return a.Start.Byte < b.Start.Byte
	}
	sortDecl(l.r.Bases, func(x *Base) hcl.Range { return x.DeclRange }, less)
	sortDecl(l.r.Repositories, func(x *Repository) hcl.Range { return x.DeclRange }, less)
	sortDecl(l.r.Drivers, func(x *Driver) hcl.Range { return x.DeclRange }, less)
	sortDecl(l.r.Runtimes, func(x *Runtime) hcl.Range { return x.DeclRange }, less)
	sortDecl(l.r.Frameworks, func(x *Framework) hcl.Range { return x.DeclRange }, less)
	sortDecl(l.r.Images, func(x *Image) hcl.Range { return x.DeclRange }, less)
	sortDecl(l.r.MachineImages, func(x *MachineImage) hcl.Range { return x.DeclRange }, less)
	sortDecl(l.r.Validates, func(x *Validate) hcl.Range { return x.DeclRange }, less)
	sortDecl(l.r.Registries, func(x *Registry) hcl.Range { return x.DeclRange }, less)
	sortDecl(l.r.Groups, func(x *Group) hcl.Range { return x.DeclRange }, less)

	repo := func(rs []*Repository) []*Repository {
		var out []*Repository
		for _, r := range rs {
			if full := find(l.r.Repositories, r.Name, func(x *Repository) string { return x.Name }); full != nil {
				out = append(out, full)
			}
		}
		return out
	}
	for _, img := range l.r.Images {
		img.Repositories = repo(img.Repositories)
	}
	one := func(r *Repository) *Repository {
		if r == nil {
			return nil
		}
		return find(l.r.Repositories, r.Name, func(x *Repository) string { return x.Name })
	}
	for _, d := range l.r.Drivers {
		d.Repository = one(d.Repository)
	}
	for _, rt := range l.r.Runtimes {
		rt.Repository = one(rt.Repository)
	}
	for _, m := range l.r.MachineImages {
		m.Repositories = repo(m.Repositories)
		if m.Driver != nil {
			m.Driver = find(l.r.Drivers, m.Driver.Name, func(x *Driver) string { return x.Name })
		}
		var rts []*Runtime
		for _, rt := range m.Runtimes {
			if full := find(l.r.Runtimes, rt.Name, func(x *Runtime) string { return x.Name }); full != nil {
				rts = append(rts, full)
			}
		}
		m.Runtimes = rts
	}

	diags = append(diags, l.applyInherits()...)
	for _, g := range l.r.Groups {
		var d hcl.Diagnostics
		g.Targets, d = l.expandGroup(g, map[string]bool{})
		diags = append(diags, d...)
	}
	return diags
}

func sortDecl[T any](s []T, rng func(T) hcl.Range, less func(a, b hcl.Range) bool) {
	sort.SliceStable(s, func(i, j int) bool { return less(rng(s[i]), rng(s[j])) })
}

// applyInherits merges each image over the images it inherits from, like bake: attributes the
// child sets win, maps merge key by key, copy and secret blocks accumulate parent first.
func (l *loader) applyInherits() hcl.Diagnostics {
	var diags hcl.Diagnostics
	done := map[string]bool{}
	var apply func(img *Image, depth int)
	apply = func(img *Image, depth int) {
		if done[img.Name] || depth > 64 {
			return
		}
		done[img.Name] = true
		if len(img.Inherits) == 0 {
			return
		}
		label := img.Name
		if img.blockLabel != "" {
			label = img.blockLabel
		}
		set := map[string]bool{}
		if b := l.blocks[KindImage][label]; b != nil {
			if body, ok := b.Body.(*hclsyntax.Body); ok {
				for name := range body.Attributes {
					set[name] = true
				}
			}
		}
		merged := &Image{}
		for _, pname := range img.Inherits {
			parent := l.r.Image(pname)
			if parent == nil {
				pb := l.blocks[KindImage][pname]
				if pb != nil {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Cannot inherit from a matrix image",
						Detail:   fmt.Sprintf("image.%s has a matrix, so it stands for several images; inherit from a plain image instead.", pname),
						Subject:  img.InheritsExpr.Range().Ptr(),
					})
				}
				continue
			}
			apply(parent, depth+1)
			mergeImage(merged, parent, nil)
		}
		mergeImage(merged, img, set)
		merged.Name, merged.DeclRange, merged.MatrixValues, merged.Inherits, merged.blockLabel = img.Name, img.DeclRange, img.MatrixValues, img.Inherits, img.blockLabel
		merged.Matrix, merged.NameExpr, merged.InheritsExpr = img.Matrix, img.NameExpr, img.InheritsExpr
		*img = *merged
	}
	for _, img := range l.r.Images {
		apply(img, 0)
	}
	return diags
}

// mergeImage lays src over dst. With set == nil every non-empty field of src wins (a parent
// already merged); otherwise only the attributes the child wrote.
func mergeImage(dst, src *Image, set map[string]bool) {
	has := func(attr string, nonEmpty bool) bool {
		if set == nil {
			return nonEmpty
		}
		return set[attr]
	}
	if has("from", src.From.Ref != nil || src.From.Image != "") {
		dst.From, dst.FromExpr = src.From, src.FromExpr
	}
	if has("repositories", len(src.Repositories) > 0) {
		dst.Repositories, dst.ReposExpr = src.Repositories, src.ReposExpr
	}
	if has("driver", isSet(src.DriverExpr)) {
		dst.DriverExpr = src.DriverExpr
	}
	if has("kernel", isSet(src.KernelExpr)) {
		dst.KernelExpr = src.KernelExpr
	}
	if has("packages", len(src.Packages) > 0) {
		dst.Packages, dst.PackagesRange = src.Packages, src.PackagesRange
	}
	if has("run", len(src.Run) > 0) {
		dst.Run, dst.RunRange = src.Run, src.RunRange
	}
	if has("outputs", len(src.Outputs) > 0) {
		dst.Outputs, dst.OutputsRange = src.Outputs, src.OutputsRange
	}
	if has("cache_from", len(src.CacheFrom) > 0) {
		dst.CacheFrom, dst.CacheFromRange = src.CacheFrom, src.CacheFromRange
	}
	if has("cache_to", len(src.CacheTo) > 0) {
		dst.CacheTo, dst.CacheToRange = src.CacheTo, src.CacheToRange
	}
	if has("workdir", src.Workdir != "") {
		dst.Workdir = src.Workdir
	}
	if has("user", src.User != "") {
		dst.User = src.User
	}
	if has("entrypoint", len(src.Entrypoint) > 0) {
		dst.Entrypoint = src.Entrypoint
	}
	if has("cmd", len(src.Cmd) > 0) {
		dst.Cmd = src.Cmd
	}
	if has("tags", len(src.Tags) > 0) {
		dst.Tags, dst.TagsRange = src.Tags, src.TagsRange
	}
	if has("platforms", len(src.Platforms) > 0) {
		dst.Platforms, dst.PlatformsRange = src.Platforms, src.PlatformsRange
	}
	if has("push", src.Push != nil) {
		dst.Push = src.Push
	}
	dst.Env = mergeMaps(dst.Env, src.Env)
	dst.Labels = mergeMaps(dst.Labels, src.Labels)
	dst.Annotations = mergeMaps(dst.Annotations, src.Annotations)
	dst.Copies = append(append([]*Copy{}, dst.Copies...), src.Copies...)
	dst.Secrets = append(append([]*Secret{}, dst.Secrets...), src.Secrets...)
}

func mergeMaps(a, b map[string]string) map[string]string {
	if len(a) == 0 && len(b) == 0 {
		return nil
	}
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// expandGroup flattens a group into target addresses, resolving bare names.
func (l *loader) expandGroup(g *Group, visiting map[string]bool) ([]string, hcl.Diagnostics) {
	if visiting[g.Name] {
		// A cycle written with references is reported by the reference graph; one written
		// with names is only found here.
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cycle in groups",
			Detail:   fmt.Sprintf("group %q contains itself through the groups it lists.", g.Name),
			Subject:  g.TargetsExpr.Range().Ptr(),
		}}
	}
	visiting[g.Name] = true
	defer delete(visiting, g.Name)
	var out []string
	var diags hcl.Diagnostics
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, t := range g.Targets {
		addrs, err := l.r.ResolveTarget(t)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Unknown target in group",
				Detail:   err.Error(),
				Subject:  g.TargetsExpr.Range().Ptr(),
			})
			continue
		}
		for _, a := range addrs {
			if strings.HasPrefix(a, KindGroup+".") {
				sub := l.r.Group(strings.TrimPrefix(a, KindGroup+"."))
				if sub != nil {
					inner, d := l.expandGroup(sub, visiting)
					diags = append(diags, d...)
					for _, x := range inner {
						add(x)
					}
				}
				continue
			}
			add(a)
		}
	}
	return out, diags
}

// ResolveTarget turns what a user names on the command line or in a group ("trainer",
// "image.trainer", a group name, a matrix block's label) into target addresses. Groups are
// returned as "group.NAME" for the caller to expand, except through [Recipe.Select].
func (r *Recipe) ResolveTarget(name string) ([]string, error) {
	if kind, n, ok := strings.Cut(name, "."); ok && contains(referableKinds, kind) {
		switch kind {
		case KindImage:
			if r.Image(n) != nil {
				return []string{name}, nil
			}
			if ms := r.matrixInstances(n); len(ms) > 0 {
				return ms, nil
			}
		case KindMachineImage:
			if r.MachineImage(n) != nil {
				return []string{name}, nil
			}
		case KindValidate:
			if r.Validate(n) != nil {
				return []string{name}, nil
			}
		case KindGroup:
			if r.Group(n) != nil {
				return []string{name}, nil
			}
		}
		return nil, fmt.Errorf("there is no target %q in this recipe.%s", name, didYouMean(name, r.allTargetNames()))
	}
	var out []string
	if r.Group(name) != nil {
		out = append(out, KindGroup+"."+name)
	}
	if r.Image(name) != nil {
		out = append(out, KindImage+"."+name)
	} else if ms := r.matrixInstances(name); len(ms) > 0 {
		out = append(out, ms...)
	}
	if r.MachineImage(name) != nil {
		out = append(out, KindMachineImage+"."+name)
	}
	if r.Validate(name) != nil {
		out = append(out, KindValidate+"."+name)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("there is no target or group %q in this recipe.%s", name, didYouMean(name, r.allTargetNames()))
	}
	kinds := map[string]bool{}
	for _, a := range out {
		k, _, _ := strings.Cut(a, ".")
		kinds[k] = true
	}
	if len(kinds) > 1 && r.Group(name) == nil {
		return nil, fmt.Errorf("%q names more than one target (%s); say which with its kind", name, strings.Join(out, ", "))
	}
	return out, nil
}

// matrixInstances returns the images a matrix block labelled label expanded into.
func (r *Recipe) matrixInstances(label string) []string {
	var out []string
	for _, img := range r.Images {
		if len(img.MatrixValues) > 0 && img.blockLabel == label {
			out = append(out, KindImage+"."+img.Name)
		}
	}
	return out
}

func (r *Recipe) allTargetNames() []string {
	var out []string
	for _, t := range r.Targets() {
		_, n, _ := strings.Cut(t, ".")
		out = append(out, t, n)
	}
	for _, g := range r.Groups {
		out = append(out, g.Name)
	}
	return out
}

// Select expands names (targets and groups) into target addresses; no names means the group
// "default" when the recipe has one, else every target.
func (r *Recipe) Select(names []string) ([]string, error) {
	if len(names) == 0 {
		if g := r.Group("default"); g != nil {
			return g.Targets, nil
		}
		return r.Targets(), nil
	}
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		addrs, err := r.ResolveTarget(n)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			expanded := []string{a}
			if strings.HasPrefix(a, KindGroup+".") {
				expanded = r.Group(strings.TrimPrefix(a, KindGroup+".")).Targets
			}
			for _, e := range expanded {
				if !seen[e] {
					seen[e] = true
					out = append(out, e)
				}
			}
		}
	}
	return out, nil
}

// lookupVar finds a variable in a context or its parents (matrix values live in a child).
func lookupVar(ctx *hcl.EvalContext, name string) (cty.Value, bool) {
	for c := ctx; c != nil; c = c.Parent() {
		if v, ok := c.Variables[name]; ok {
			return v, true
		}
	}
	return cty.NilVal, false
}
