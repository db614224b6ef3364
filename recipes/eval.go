package recipes

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// node is one unit of evaluation: a local value or a named block.
type node struct {
	addr   string // "local.x", "image.trainer"
	block  *hcl.Block
	local  *hcl.Attribute
	refs   []ref
	matrix map[string]bool // matrix keys usable as bare variables inside the block
}

// ref is one traversal from a node to another node.
type ref struct {
	to    string // address of the referenced node, "" for var.*
	attr  string // the attribute traversed after the block, if any
	tr    hcl.Traversal
	isVar string // variable name for var.* references
}

// evaluate builds the reference graph of locals and blocks, reports undeclared and cyclic
// references, and evaluates the nodes in dependency order.
func (l *loader) evaluate() hcl.Diagnostics {
	var diags hcl.Diagnostics
	nodes := map[string]*node{}
	var addrs []string
	for _, name := range l.localList {
		n := &node{addr: "local." + name, local: l.localDefs[name]}
		nodes[n.addr], addrs = n, append(addrs, n.addr)
	}
	for _, b := range l.order {
		n := &node{addr: b.Type + "." + b.Labels[0], block: b, matrix: matrixKeys(b)}
		nodes[n.addr], addrs = n, append(addrs, n.addr)
	}

	for _, addr := range addrs {
		n := nodes[addr]
		for _, tr := range nodeTraversals(n) {
			r, d := l.classify(n, tr)
			if d != nil {
				diags = append(diags, d)
				l.failed[n.addr] = true
				continue
			}
			if r != nil {
				n.refs = append(n.refs, *r)
			}
		}
	}

	order, inCycle, cdiags := topoSort(addrs, nodes)
	diags = append(diags, cdiags...)
	// Members of a cycle read each other as unknown values, so each is still decoded and
	// checked, and nothing reports the cycle a second time.
	for addr := range inCycle {
		l.setValue(nodes[addr], cty.DynamicVal)
	}
	for _, addr := range order {
		diags = append(diags, l.evalNode(nodes[addr])...)
	}
	return diags
}

func matrixKeys(b *hcl.Block) map[string]bool {
	body, ok := b.Body.(*hclsyntax.Body)
	if !ok || b.Type != KindImage {
		return nil
	}
	attr, ok := body.Attributes["matrix"]
	if !ok {
		return nil
	}
	keys := map[string]bool{}
	pairs, _ := hcl.ExprMap(attr.Expr)
	for _, p := range pairs {
		if k := hcl.ExprAsKeyword(p.Key); k != "" {
			keys[k] = true
		} else if v, d := p.Key.Value(nil); !d.HasErrors() && v.Type() == cty.String {
			keys[v.AsString()] = true
		}
	}
	return keys
}

// nodeTraversals lists every variable traversal in a node's expressions.
func nodeTraversals(n *node) []hcl.Traversal {
	if n.local != nil {
		return n.local.Expr.Variables()
	}
	var out []hcl.Traversal
	if body, ok := n.block.Body.(*hclsyntax.Body); ok {
		_ = hclsyntax.VisitAll(body, func(nd hclsyntax.Node) hcl.Diagnostics {
			if attr, ok := nd.(*hclsyntax.Attribute); ok {
				out = append(out, attr.Expr.Variables()...)
			}
			return nil
		})
	}
	return out
}

// classify resolves one traversal to the node it depends on, or reports why it cannot.
func (l *loader) classify(n *node, tr hcl.Traversal) (*ref, *hcl.Diagnostic) {
	root := tr.RootName()
	rng := tr.SourceRange()
	second := ""
	if len(tr) > 1 {
		second = traverserName(tr[1])
	}
	switch {
	case n.matrix[root]:
		return nil, nil
	case root == "var":
		if second == "" {
			return nil, refDiag(rng, "Invalid reference", "A reference to an input variable needs a name: var.NAME.")
		}
		if _, ok := l.r.vars[second]; !ok {
			return nil, refDiag(rng, "Reference to undeclared input variable",
				fmt.Sprintf("An input variable named %q has not been declared.%s", second, didYouMean(second, mapKeys(l.r.vars))))
		}
		return &ref{tr: tr, isVar: second}, nil
	case root == "local":
		if second == "" {
			return nil, refDiag(rng, "Invalid reference", "A reference to a local value needs a name: local.NAME.")
		}
		if _, ok := l.localDefs[second]; !ok {
			return nil, refDiag(rng, "Reference to undeclared local value",
				fmt.Sprintf("A local value named %q has not been declared.%s", second, didYouMean(second, mapKeys(l.localDefs))))
		}
		return &ref{to: "local." + second, tr: tr}, nil
	case contains(referableKinds, root):
		if second == "" {
			return nil, refDiag(rng, "Invalid reference", fmt.Sprintf("A reference to a %s block needs its name: %s.NAME.", root, root))
		}
		if _, ok := l.blocks[root][second]; !ok {
			return nil, refDiag(rng, "Reference to undeclared "+strings.ReplaceAll(root, "_", " "),
				fmt.Sprintf("There is no %s block named %q in this recipe.%s", root, second, didYouMean(second, mapKeys(l.blocks[root]))))
		}
		r := &ref{to: root + "." + second, tr: tr}
		if len(tr) > 2 {
			r.attr = traverserName(tr[2])
		}
		return r, nil
	default:
		roots := append([]string{"var", "local"}, referableKinds...)
		for k := range n.matrix {
			roots = append(roots, k)
		}
		return nil, refDiag(rng, "Reference to undeclared name",
			fmt.Sprintf("%q is not something a recipe can refer to. References start with var., local. or a block kind (%s).%s",
				root, strings.Join(referableKinds, ", "), didYouMean(root, roots)))
	}
}

func refDiag(rng hcl.Range, summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: rng.Ptr()}
}

// topoSort orders nodes so each comes after what it references, in declaration order where the
// graph allows. Each cycle is reported once, at the reference that closes it.
func topoSort(addrs []string, nodes map[string]*node) ([]string, map[string]bool, hcl.Diagnostics) {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var order []string
	var diags hcl.Diagnostics
	var stack []string
	reported := map[string]bool{}
	inCycle := map[string]bool{}
	var visit func(addr string)
	visit = func(addr string) {
		color[addr] = grey
		stack = append(stack, addr)
		for _, r := range nodes[addr].refs {
			if r.to == "" {
				continue // var.* is evaluated before every node
			}
			switch color[r.to] {
			case white:
				visit(r.to)
			case grey:
				start := indexOf(stack, r.to)
				cycle := append(append([]string{}, stack[start:]...), r.to)
				for _, m := range cycle {
					inCycle[m] = true
				}
				key := cycleKey(cycle)
				if !reported[key] {
					reported[key] = true
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Cycle in references",
						Detail: fmt.Sprintf("These references form a cycle: %s. Each of them needs the others to be evaluated first; break the cycle by removing one reference.",
							strings.Join(cycle, " → ")),
						Subject: r.tr.SourceRange().Ptr(),
					})
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[addr] = black
		order = append(order, addr)
	}
	for _, a := range addrs {
		if color[a] == white {
			visit(a)
		}
	}
	return order, inCycle, diags
}

func cycleKey(cycle []string) string {
	members := append([]string{}, cycle[:len(cycle)-1]...)
	sort.Strings(members)
	return strings.Join(members, ",")
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func contains(s []string, v string) bool { return indexOf(s, v) >= 0 }

// evalContext is the context an expression of a node evaluates in: var, local, every block kind
// evaluated so far, and the functions.
func (l *loader) evalContext() *hcl.EvalContext {
	vars := map[string]cty.Value{}
	vv := map[string]cty.Value{}
	for _, v := range l.r.Variables {
		vv[v.Name] = v.Value
	}
	vars["var"] = cty.ObjectVal(vv)
	vars["local"] = cty.ObjectVal(l.locals)
	for _, k := range referableKinds {
		vars[k] = cty.ObjectVal(l.values[k])
	}
	return &hcl.EvalContext{Variables: vars, Functions: l.funcs}
}

func (l *loader) setValue(n *node, v cty.Value) {
	if n.local != nil {
		l.locals[strings.TrimPrefix(n.addr, "local.")] = v
		return
	}
	k, name := n.block.Type, n.block.Labels[0]
	if l.values[k] == nil {
		l.values[k] = map[string]cty.Value{}
	}
	l.values[k][name] = v
}

// taintedExpr reports whether an expression reads a sensitive variable, or a local or block
// attribute computed from one.
func (l *loader) taintedExpr(n *node, expr hcl.Expression) bool {
	for _, tr := range expr.Variables() {
		root := tr.RootName()
		second := ""
		if len(tr) > 1 {
			second = traverserName(tr[1])
		}
		switch {
		case n != nil && n.matrix[root]:
		case root == "var":
			if v := l.r.vars[second]; v != nil && v.Sensitive {
				return true
			}
		case root == "local":
			if l.tainted["local."+second] {
				return true
			}
		default:
			addr := root + "." + second
			if len(tr) > 2 {
				if l.tainted[addr+"."+traverserName(tr[2])] {
					return true
				}
			} else if l.tainted[addr] {
				return true
			}
		}
	}
	return false
}

// collectSensitive records the values of the parts of expr computed from sensitive values: in
// a map or list literal only the tainted items, so { USER = var.public, AUTH = var.token }
// hides the token and not the user name.
func (l *loader) collectSensitive(n *node, expr hcl.Expression, ctx *hcl.EvalContext) {
	if !l.taintedExpr(n, expr) {
		return
	}
	switch e := expr.(type) {
	case *hclsyntax.ScopeTraversalExpr, *hclsyntax.RelativeTraversalExpr:
		// A reference yields values already recorded where they were computed; recording
		// the whole referenced block would hide its public attributes too.
		return
	case *hclsyntax.ObjectConsExpr:
		for _, item := range e.Items {
			l.collectSensitive(n, item.KeyExpr, ctx)
			l.collectSensitive(n, item.ValueExpr, ctx)
		}
	case *hclsyntax.TupleConsExpr:
		for _, el := range e.Exprs {
			l.collectSensitive(n, el, ctx)
		}
	case *hclsyntax.TemplateExpr:
		for _, part := range e.Parts {
			l.collectSensitive(n, part, ctx)
		}
	case *hclsyntax.TemplateWrapExpr:
		l.collectSensitive(n, e.Wrapped, ctx)
	default:
		if v, diags := expr.Value(ctx); !diags.HasErrors() {
			l.r.addDerivedSensitive(v)
		}
	}
}

// evalNode evaluates one local or block: it records the value other expressions see, marks what
// is computed from sensitive values, and decodes blocks into the typed recipe.
func (l *loader) evalNode(n *node) hcl.Diagnostics {
	ctx := l.evalContext()
	if n.local != nil {
		if _, done := l.locals[strings.TrimPrefix(n.addr, "local.")]; done {
			return nil // a member of a cycle, already unknown
		}
		v, diags := n.local.Expr.Value(ctx)
		if diags.HasErrors() {
			v = cty.DynamicVal
		}
		if l.taintedExpr(n, n.local.Expr) {
			l.tainted[n.addr] = true
			l.collectSensitive(n, n.local.Expr, ctx)
		}
		l.setValue(n, v)
		return diags
	}

	body, _ := n.block.Body.(*hclsyntax.Body)
	obj := map[string]cty.Value{"name": cty.StringVal(n.block.Labels[0])}
	if body != nil && len(n.matrix) == 0 {
		for name, v := range l.objectOf(n, body, ctx, n.addr) {
			obj[name] = v
		}
	}
	l.setValue(n, cty.ObjectVal(obj))
	return l.decodeBlock(n, ctx)
}

// objectOf evaluates a block body generically into attribute values, so that other blocks can
// read them (image.base.tags[0]). Errors are left to the typed decoding, which reports them.
func (l *loader) objectOf(n *node, body *hclsyntax.Body, ctx *hcl.EvalContext, addr string) map[string]cty.Value {
	out := map[string]cty.Value{}
	for name, attr := range body.Attributes {
		v, diags := attr.Expr.Value(ctx)
		if diags.HasErrors() {
			v = cty.DynamicVal
		}
		if l.taintedExpr(n, attr.Expr) {
			l.tainted[addr+"."+name] = true
			l.tainted[addr] = true
			l.collectSensitive(n, attr.Expr, ctx)
		}
		out[name] = v
	}
	nested := map[string][]cty.Value{}
	var types []string
	for _, b := range body.Blocks {
		if _, seen := nested[b.Type]; !seen {
			types = append(types, b.Type)
		}
		inner := l.objectOf(n, b.Body, ctx, addr)
		for i, lbl := range b.Labels {
			if i == 0 {
				inner["name"] = cty.StringVal(lbl)
			}
		}
		nested[b.Type] = append(nested[b.Type], cty.ObjectVal(inner))
	}
	for _, t := range types {
		if singleBlocks[t] && len(nested[t]) == 1 {
			out[t] = nested[t][0]
		} else {
			out[t] = cty.TupleVal(nested[t])
		}
	}
	return out
}

// singleBlocks are nested blocks that appear at most once; references see them as objects.
var singleBlocks = map[string]bool{
	"bootstrap": true, "disk": true, "ami": true, "volume": true, "share": true,
	"nvidia_smi": true, "resnet50": true, "host": true,
}

func (l *loader) decodeBlock(n *node, ctx *hcl.EvalContext) hcl.Diagnostics {
	b := n.block
	switch b.Type {
	case KindBase:
		v := &Base{}
		diags := gohcl.DecodeBody(b.Body, ctx, v)
		v.Name, v.DeclRange = b.Labels[0], b.DefRange
		l.r.Bases = append(l.r.Bases, v)
		return diags
	case KindRepository:
		v := &Repository{}
		diags := gohcl.DecodeBody(b.Body, ctx, v)
		v.Name, v.DeclRange = b.Labels[0], b.DefRange
		l.r.Repositories = append(l.r.Repositories, v)
		return diags
	case KindDriver:
		v := &Driver{}
		diags := gohcl.DecodeBody(b.Body, ctx, v)
		v.Name, v.DeclRange = b.Labels[0], b.DefRange
		diags = append(diags, l.resolveRepositoryOf(v.RepositoryExpr, &v.Repository, ctx)...)
		l.r.Drivers = append(l.r.Drivers, v)
		return diags
	case KindRuntime:
		v := &Runtime{}
		diags := gohcl.DecodeBody(b.Body, ctx, v)
		v.Name, v.DeclRange = b.Labels[0], b.DefRange
		diags = append(diags, l.resolveRepositoryOf(v.RepositoryExpr, &v.Repository, ctx)...)
		if v.Type == "" && (v.Name == "docker" || v.Name == "nvidia") {
			v.Type = v.Name
		}
		l.r.Runtimes = append(l.r.Runtimes, v)
		return diags
	case KindFramework:
		v := &Framework{}
		diags := gohcl.DecodeBody(b.Body, ctx, v)
		v.Name, v.DeclRange = b.Labels[0], b.DefRange
		l.r.Frameworks = append(l.r.Frameworks, v)
		return diags
	case KindMachineImage:
		v := &MachineImage{}
		diags := gohcl.DecodeBody(b.Body, ctx, v)
		v.Name, v.DeclRange = b.Labels[0], b.DefRange
		diags = append(diags, l.resolveMachineImage(v, ctx)...)
		l.r.MachineImages = append(l.r.MachineImages, v)
		return diags
	case KindValidate:
		v := &Validate{}
		diags := gohcl.DecodeBody(b.Body, ctx, v)
		v.Name, v.DeclRange = b.Labels[0], b.DefRange
		diags = append(diags, l.resolveValidate(v, ctx)...)
		l.r.Validates = append(l.r.Validates, v)
		return diags
	case KindRegistry:
		v := &Registry{}
		diags := gohcl.DecodeBody(b.Body, ctx, v)
		v.Name, v.DeclRange = b.Labels[0], b.DefRange
		l.r.Registries = append(l.r.Registries, v)
		return diags
	case KindGroup:
		v := &Group{}
		diags := gohcl.DecodeBody(b.Body, ctx, v)
		v.Name, v.DeclRange = b.Labels[0], b.DefRange
		diags = append(diags, l.resolveGroup(v, ctx)...)
		l.r.Groups = append(l.r.Groups, v)
		return diags
	case KindImage:
		return l.decodeImage(n, ctx)
	}
	return nil
}

// decodeImage decodes an image block, expanding its matrix into one image per combination.
func (l *loader) decodeImage(n *node, ctx *hcl.EvalContext) hcl.Diagnostics {
	b := n.block
	if len(n.matrix) == 0 {
		v := &Image{}
		diags := gohcl.DecodeBody(b.Body, ctx, v)
		v.Name, v.DeclRange = b.Labels[0], b.DefRange
		if isSet(v.NameExpr) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Unexpected name attribute",
				Detail:   "The name attribute names the images a matrix produces; this image has no matrix, so its name is its label.",
				Subject:  v.NameExpr.Range().Ptr(),
			})
		}
		diags = append(diags, l.resolveImage(v, ctx)...)
		l.r.Images = append(l.r.Images, v)
		return diags
	}

	body := b.Body.(*hclsyntax.Body)
	mattr := body.Attributes["matrix"]
	mval, diags := mattr.Expr.Value(ctx)
	if diags.HasErrors() {
		return diags
	}
	axes, adiags := matrixAxes(mval, mattr.Expr.Range(), matrixKeyOrder(mattr.Expr))
	if adiags.HasErrors() {
		return append(diags, adiags...)
	}
	if n := combinations(axes); n > maxMatrixImages {
		return append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Matrix too large",
			Detail:   fmt.Sprintf("This matrix expands to %d images; gpuforge builds at most %d from one block. Split it into several blocks.", n, maxMatrixImages),
			Subject:  mattr.Expr.Range().Ptr(),
		})
	}
	nameAttr, hasName := body.Attributes["name"]
	if !hasName {
		return append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Missing name for matrix image",
			Detail:   fmt.Sprintf("An image with a matrix builds one image per combination, and each needs its own name: add for example name = \"%s-${%s}\".", b.Labels[0], axes[0].key),
			Subject:  b.DefRange.Ptr(),
		})
	}
	seen := map[string]bool{}
	for _, combo := range product(axes) {
		child := ctx.NewChild()
		child.Variables = map[string]cty.Value{}
		values := map[string]string{}
		for k, v := range combo {
			child.Variables[k] = cty.StringVal(v)
			values[k] = v
		}
		v := &Image{}
		diags = append(diags, gohcl.DecodeBody(b.Body, child, v)...)
		nv, ndiags := nameAttr.Expr.Value(child)
		diags = append(diags, ndiags...)
		if ndiags.HasErrors() {
			continue
		}
		if name, ok := asString(nv); !ok || !validName(name) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid matrix image name",
				Detail:   "The name of each matrix image must be a string of letters, digits, underscores and dashes.",
				Subject:  nameAttr.Expr.Range().Ptr(),
			})
			continue
		} else {
			v.Name = name
		}
		if seen[v.Name] || l.blocks[KindImage][v.Name] != nil && v.Name != b.Labels[0] || l.r.Image(v.Name) != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate matrix image name",
				Detail:   fmt.Sprintf("Two images are named %q. The name expression must differ for every combination of the matrix.", v.Name),
				Subject:  nameAttr.Expr.Range().Ptr(),
			})
			continue
		}
		seen[v.Name] = true
		l.objectOf(n, body, child, n.addr) // records what this instance computes from sensitive values
		v.DeclRange, v.MatrixValues, v.blockLabel = b.DefRange, values, b.Labels[0]
		diags = append(diags, l.resolveImage(v, child)...)
		l.r.Images = append(l.r.Images, v)
	}
	return diags
}

// maxMatrixImages bounds a matrix expansion, so a typo such as range(1000) in two axes cannot
// ask for a million images.
const maxMatrixImages = 256

func combinations(axes []axis) int {
	n := 1
	for _, a := range axes {
		n *= len(a.values)
		if n > maxMatrixImages {
			return n
		}
	}
	return n
}

type axis struct {
	key    string
	values []string
}

// matrixKeyOrder returns the matrix keys in the order they are written, so the first key varies
// slowest in the expansion.
func matrixKeyOrder(expr hcl.Expression) map[string]int {
	order := map[string]int{}
	pairs, _ := hcl.ExprMap(expr)
	for i, p := range pairs {
		if k := hcl.ExprAsKeyword(p.Key); k != "" {
			order[k] = i
		}
	}
	return order
}

func matrixAxes(v cty.Value, rng hcl.Range, order map[string]int) ([]axis, hcl.Diagnostics) {
	bad := hcl.Diagnostics{{
		Severity: hcl.DiagError,
		Summary:  "Invalid matrix",
		Detail:   "A matrix is a map from names to non-empty lists of strings, for example matrix = { python = [\"3.10\", \"3.11\"] }.",
		Subject:  rng.Ptr(),
	}}
	if v.IsNull() || !v.IsKnown() || !(v.Type().IsObjectType() || v.Type().IsMapType()) || v.LengthInt() == 0 {
		return nil, bad
	}
	var axes []axis
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		list, err := convert.Convert(e, cty.List(cty.String))
		if err != nil || list.IsNull() || !list.IsWhollyKnown() || list.LengthInt() == 0 {
			return nil, bad
		}
		a := axis{key: k.AsString()}
		for _, s := range list.AsValueSlice() {
			a.values = append(a.values, s.AsString())
		}
		axes = append(axes, a)
	}
	sort.Slice(axes, func(i, j int) bool {
		oi, iok := order[axes[i].key]
		oj, jok := order[axes[j].key]
		if iok && jok && oi != oj {
			return oi < oj
		}
		return axes[i].key < axes[j].key
	})
	return axes, nil
}

func product(axes []axis) []map[string]string {
	out := []map[string]string{{}}
	for _, a := range axes {
		var next []map[string]string
		for _, base := range out {
			for _, v := range a.values {
				m := map[string]string{a.key: v}
				for k, bv := range base {
					m[k] = bv
				}
				next = append(next, m)
			}
		}
		out = next
	}
	return out
}
