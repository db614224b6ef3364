package recipes

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
)

// EnvPrefix is the prefix of environment variables that set recipe variables: GPUFORGE_VAR_name.
const EnvPrefix = "GPUFORGE_VAR_"

// decodeVariables decodes the variable blocks and gives each its final value, in order of
// precedence (later wins): default, GPUFORGE_VAR_ environment, -var-file files, -var flags.
func (l *loader) decodeVariables(blocks []*hcl.Block) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, b := range blocks {
		v := &Variable{}
		diags = append(diags, gohcl.DecodeBody(b.Body, nil, v)...)
		v.Name = b.Labels[0]
		v.DeclRange = b.DefRange
		if !hclsyntax.ValidIdentifier(v.Name) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid variable name",
				Detail:   "A variable name must start with a letter or underscore and contain only letters, digits, underscores and dashes.",
				Subject:  &b.LabelRanges[0],
			})
		}
		v.Type = cty.DynamicPseudoType
		if isSet(v.TypeExpr) {
			ty, tdiags := typeexpr.TypeConstraint(v.TypeExpr)
			diags = append(diags, tdiags...)
			if !tdiags.HasErrors() {
				v.Type = ty
			}
		}
		v.Value = cty.NullVal(v.Type)
		if isSet(v.DefaultExpr) {
			def, ddiags := v.DefaultExpr.Value(&hcl.EvalContext{Functions: l.funcs})
			diags = append(diags, ddiags...)
			if !ddiags.HasErrors() {
				conv, err := convert.Convert(def, v.Type)
				if err != nil {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Invalid default value for variable",
						Detail:   fmt.Sprintf("This default value is not compatible with the variable's type constraint: %s.", err),
						Subject:  v.DefaultExpr.Range().Ptr(),
					})
				} else {
					v.Value, v.Source = conv, "default"
				}
			}
		}
		if _, dup := l.r.vars[v.Name]; dup {
			diags = append(diags, duplicateDiag("variable", v.Name, l.r.vars[v.Name].DeclRange, b.DefRange))
			continue
		}
		l.r.vars[v.Name] = v
		l.r.Variables = append(l.r.Variables, v)
	}

	diags = append(diags, l.applyEnv()...)
	for _, f := range l.opts.VarFiles {
		diags = append(diags, l.applyVarFile(f)...)
	}
	for _, kv := range l.opts.Vars {
		diags = append(diags, l.applyVarFlag(kv)...)
	}

	for _, v := range l.r.Variables {
		if v.Value.IsNull() && v.Source == "" {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "No value for required variable",
				Detail: fmt.Sprintf("The variable %q has no default, so a value must be given with -var %s=…, -var-file, or the environment variable %s%s.",
					v.Name, v.Name, EnvPrefix, v.Name),
				Subject: v.DeclRange.Ptr(),
			})
			v.Value = cty.UnknownVal(v.Type)
		}
		if v.Sensitive {
			l.r.addSensitive(v.Value)
		}
	}
	return diags
}

// checkValidations evaluates each variable's validation rules against its final value.
func (l *loader) checkValidations() hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, v := range l.r.Variables {
		if !v.Value.IsWhollyKnown() {
			continue
		}
		ctx := &hcl.EvalContext{
			Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{v.Name: v.Value})},
			Functions: l.funcs,
		}
		for _, rule := range v.Validations {
			for _, tr := range rule.Condition.Variables() {
				if tr.RootName() != "var" || len(tr) < 2 || traverserName(tr[1]) != v.Name {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Invalid reference in variable validation",
						Detail:   fmt.Sprintf("The condition for variable %q can only refer to the variable itself, using var.%s.", v.Name, v.Name),
						Subject:  tr.SourceRange().Ptr(),
					})
				}
			}
			result, cdiags := rule.Condition.Value(ctx)
			if cdiags.HasErrors() {
				diags = append(diags, cdiags...)
				continue
			}
			result, err := convert.Convert(result, cty.Bool)
			if err == nil && !result.IsKnown() {
				continue // depends on a value that already failed
			}
			if err != nil || result.IsNull() {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid validation condition",
					Detail:   "The condition must evaluate to true or false.",
					Subject:  rule.Condition.Range().Ptr(),
				})
				continue
			}
			if result.True() {
				continue
			}
			detail := rule.ErrorMessage
			if !v.Sensitive && v.Value.Type() == cty.String {
				detail += fmt.Sprintf("\n\nThe value %q was set by %s.", v.Value.AsString(), v.Source)
			} else {
				detail += fmt.Sprintf("\n\nThe value was set by %s.", v.Source)
			}
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid value for variable",
				Detail:   detail,
				Subject:  rule.Condition.Range().Ptr(),
				Context:  rule.DeclRange.Ptr(),
			})
		}
	}
	return diags
}

func (l *loader) applyEnv() hcl.Diagnostics {
	var diags hcl.Diagnostics
	env := l.opts.Env
	if env == nil {
		env = os.Environ()
	}
	sort.Strings(env)
	for _, kv := range env {
		if !strings.HasPrefix(kv, EnvPrefix) {
			continue
		}
		name, raw, _ := strings.Cut(strings.TrimPrefix(kv, EnvPrefix), "=")
		v, ok := l.r.vars[name]
		if !ok {
			continue // the environment may hold variables for other recipes
		}
		diags = append(diags, l.setRaw(v, raw, "env", hcl.Range{Filename: "<environment variable " + EnvPrefix + name + ">"})...)
	}
	return diags
}

func (l *loader) applyVarFlag(kv string) hcl.Diagnostics {
	name, raw, ok := strings.Cut(kv, "=")
	rng := hcl.Range{Filename: "<value for -var " + name + ">"}
	if !ok || name == "" {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid -var option",
			Detail:   fmt.Sprintf("The given -var option %q is not correctly specified. It must be a variable name and value separated by an equals sign, like -var key=value.", kv),
			Subject:  &hcl.Range{Filename: "<-var option>"},
		}}
	}
	v, declared := l.r.vars[name]
	if !declared {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Value for undeclared variable",
			Detail:   fmt.Sprintf("A variable named %q was assigned with -var, but the recipe declares no such variable.%s", name, didYouMean(name, mapKeys(l.r.vars))),
			Subject:  &rng,
		}}
	}
	return l.setRaw(v, raw, "-var", rng)
}

// setRaw sets a variable from a string given outside any file: strings are taken literally,
// other types are parsed as HCL expressions (as Terraform and Packer do).
func (l *loader) setRaw(v *Variable, raw, source string, rng hcl.Range) hcl.Diagnostics {
	if v.Sensitive {
		l.r.addSensitive(cty.StringVal(raw))
	}
	var val cty.Value
	if v.Type == cty.String || v.Type == cty.DynamicPseudoType {
		val = cty.StringVal(raw)
	} else {
		expr, diags := hclsyntax.ParseExpression([]byte(raw), rng.Filename, hcl.Pos{Line: 1, Column: 1, Byte: 0})
		if diags.HasErrors() {
			return diags
		}
		var vdiags hcl.Diagnostics
		val, vdiags = expr.Value(nil)
		if vdiags.HasErrors() {
			return vdiags
		}
	}
	return l.setVarValue(v, val, source, rng)
}

func (l *loader) setVarValue(v *Variable, val cty.Value, source string, rng hcl.Range) hcl.Diagnostics {
	if v.Sensitive {
		l.r.addSensitive(val) // also when it fails to convert: the error shows where it was written
	}
	conv, err := convert.Convert(val, v.Type)
	if err != nil {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid value for variable",
			Detail:   fmt.Sprintf("The value given for variable %q (from %s) is not compatible with its type constraint: %s.", v.Name, source, err),
			Subject:  &rng,
		}}
	}
	v.Value, v.Source = conv, source
	return nil
}

func (l *loader) applyVarFile(path string) hcl.Diagnostics {
	src, err := os.ReadFile(path)
	if err != nil {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Failed to read variables file",
			Detail:   fmt.Sprintf("Cannot read %s: %s.", path, unwrapPathError(err)),
			Subject:  &hcl.Range{Filename: path},
		}}
	}
	f, diags := l.parser.ParseHCL(src, path)
	if diags.HasErrors() {
		return diags
	}
	attrs, adiags := f.Body.JustAttributes()
	diags = append(diags, adiags...)
	names := make([]string, 0, len(attrs))
	for n := range attrs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		attr := attrs[name]
		v, ok := l.r.vars[name]
		if !ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagWarning,
				Summary:  "Value for undeclared variable",
				Detail:   fmt.Sprintf("The variables file sets %q, but the recipe declares no such variable.%s", name, didYouMean(name, mapKeys(l.r.vars))),
				Subject:  attr.NameRange.Ptr(),
			})
			continue
		}
		if v.Sensitive {
			// The file's text is shown in snippets of any error about this line.
			l.r.addSensitive(cty.StringVal(strings.TrimSpace(string(attr.Expr.Range().SliceBytes(src)))))
		}
		val, vdiags := attr.Expr.Value(&hcl.EvalContext{Functions: map[string]function.Function{}})
		diags = append(diags, vdiags...)
		if vdiags.HasErrors() {
			continue
		}
		diags = append(diags, l.setVarValue(v, val, path, attr.Expr.Range())...)
	}
	return diags
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
