package recipes

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/hashicorp/go-cty-funcs/cidr"
	"github.com/hashicorp/go-cty-funcs/crypto"
	"github.com/hashicorp/go-cty-funcs/encoding"
	"github.com/hashicorp/go-cty-funcs/filesystem"
	"github.com/hashicorp/go-cty-funcs/uuid"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// functions returns the function table of a recipe: go-cty's stdlib and go-cty-funcs, the set
// Packer and buildx bake ship, plus timestamp and templatefile, which need the recipe's clock and
// directory and so exist in no library in a form we can bind.
func functions(baseDir string, now time.Time) map[string]function.Function {
	fns := map[string]function.Function{
		"abs":                stdlib.AbsoluteFunc,
		"abspath":            filesystem.AbsPathFunc,
		"add":                stdlib.AddFunc,
		"and":                stdlib.AndFunc,
		"base64decode":       encoding.Base64DecodeFunc,
		"base64encode":       encoding.Base64EncodeFunc,
		"basename":           filesystem.BasenameFunc,
		"can":                tryfunc.CanFunc,
		"ceil":               stdlib.CeilFunc,
		"chomp":              stdlib.ChompFunc,
		"chunklist":          stdlib.ChunklistFunc,
		"cidrhost":           cidr.HostFunc,
		"cidrnetmask":        cidr.NetmaskFunc,
		"cidrsubnet":         cidr.SubnetFunc,
		"cidrsubnets":        cidr.SubnetsFunc,
		"coalesce":           stdlib.CoalesceFunc,
		"coalescelist":       stdlib.CoalesceListFunc,
		"compact":            stdlib.CompactFunc,
		"concat":             stdlib.ConcatFunc,
		"contains":           stdlib.ContainsFunc,
		"csvdecode":          stdlib.CSVDecodeFunc,
		"dirname":            filesystem.DirnameFunc,
		"distinct":           stdlib.DistinctFunc,
		"divide":             stdlib.DivideFunc,
		"element":            stdlib.ElementFunc,
		"equal":              stdlib.EqualFunc,
		"file":               filesystem.MakeFileFunc(baseDir, false),
		"filebase64":         filesystem.MakeFileFunc(baseDir, true),
		"fileexists":         filesystem.MakeFileExistsFunc(baseDir),
		"fileset":            filesystem.MakeFileSetFunc(baseDir),
		"flatten":            stdlib.FlattenFunc,
		"floor":              stdlib.FloorFunc,
		"format":             stdlib.FormatFunc,
		"formatdate":         stdlib.FormatDateFunc,
		"formatlist":         stdlib.FormatListFunc,
		"greaterthan":        stdlib.GreaterThanFunc,
		"hasindex":           stdlib.HasIndexFunc,
		"indent":             stdlib.IndentFunc,
		"index":              stdlib.IndexFunc,
		"join":               stdlib.JoinFunc,
		"jsondecode":         stdlib.JSONDecodeFunc,
		"jsonencode":         stdlib.JSONEncodeFunc,
		"keys":               stdlib.KeysFunc,
		"length":             stdlib.LengthFunc,
		"lessthan":           stdlib.LessThanFunc,
		"log":                stdlib.LogFunc,
		"lookup":             stdlib.LookupFunc,
		"lower":              stdlib.LowerFunc,
		"max":                stdlib.MaxFunc,
		"md5":                crypto.Md5Func,
		"merge":              stdlib.MergeFunc,
		"min":                stdlib.MinFunc,
		"modulo":             stdlib.ModuloFunc,
		"multiply":           stdlib.MultiplyFunc,
		"not":                stdlib.NotFunc,
		"notequal":           stdlib.NotEqualFunc,
		"or":                 stdlib.OrFunc,
		"parseint":           stdlib.ParseIntFunc,
		"pow":                stdlib.PowFunc,
		"range":              stdlib.RangeFunc,
		"regex":              stdlib.RegexFunc,
		"regexall":           stdlib.RegexAllFunc,
		"regex_replace":      stdlib.RegexReplaceFunc,
		"replace":            stdlib.ReplaceFunc,
		"reverse":            stdlib.ReverseListFunc,
		"setintersection":    stdlib.SetIntersectionFunc,
		"setproduct":         stdlib.SetProductFunc,
		"setsubtract":        stdlib.SetSubtractFunc,
		"setunion":           stdlib.SetUnionFunc,
		"sha1":               crypto.Sha1Func,
		"sha256":             crypto.Sha256Func,
		"sha512":             crypto.Sha512Func,
		"signum":             stdlib.SignumFunc,
		"slice":              stdlib.SliceFunc,
		"sort":               stdlib.SortFunc,
		"split":              stdlib.SplitFunc,
		"strlen":             stdlib.StrlenFunc,
		"strrev":             stdlib.ReverseFunc,
		"substr":             stdlib.SubstrFunc,
		"subtract":           stdlib.SubtractFunc,
		"timeadd":            stdlib.TimeAddFunc,
		"title":              stdlib.TitleFunc,
		"trim":               stdlib.TrimFunc,
		"trimprefix":         stdlib.TrimPrefixFunc,
		"trimspace":          stdlib.TrimSpaceFunc,
		"trimsuffix":         stdlib.TrimSuffixFunc,
		"try":                tryfunc.TryFunc,
		"upper":              stdlib.UpperFunc,
		"urlencode":          encoding.URLEncodeFunc,
		"uuidv4":             uuid.V4Func,
		"values":             stdlib.ValuesFunc,
		"zipmap":             stdlib.ZipmapFunc,
		"timestamp":          timestampFunc(now),
		"templatefile":       function.Function{}, // set below: it needs the table itself
		"sethaselement":      stdlib.SetHasElementFunc,
		"greaterthanorequal": stdlib.GreaterThanOrEqualToFunc,
		"lessthanorequal":    stdlib.LessThanOrEqualToFunc,
	}
	fns["templatefile"] = templateFileFunc(baseDir, fns)
	return fns
}

// FunctionNames lists the functions a recipe may call, sorted.
func FunctionNames() []string {
	fns := functions(".", time.Unix(0, 0))
	names := make([]string, 0, len(fns))
	for n := range fns {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// timestampFunc returns the build's time in RFC 3339, the same for every call in one load so a
// recipe that uses it twice names one instant; it is SOURCE_DATE_EPOCH when set.
func timestampFunc(now time.Time) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{},
		Type:   function.StaticReturnType(cty.String),
		Impl: func([]cty.Value, cty.Type) (cty.Value, error) {
			return cty.StringVal(now.UTC().Format(time.RFC3339)), nil
		},
	})
}

// templateFileFunc renders a file as an HCL string template with the given variables and the
// recipe's functions (templatefile itself excluded). Packer's and Terraform's versions live in
// their own internal packages, so this small one is ours.
func templateFileFunc(baseDir string, fns map[string]function.Function) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{
			{Name: "path", Type: cty.String},
			{Name: "vars", Type: cty.DynamicPseudoType},
		},
		Type: function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			path := args[0].AsString()
			if !filepath.IsAbs(path) {
				path = filepath.Join(baseDir, path)
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return cty.NilVal, fmt.Errorf("reading template: %w", err)
			}
			tmpl, diags := hclsyntax.ParseTemplate(src, path, hcl.Pos{Line: 1, Column: 1})
			if diags.HasErrors() {
				return cty.NilVal, diags
			}
			vars := args[1]
			if !vars.Type().IsObjectType() && !vars.Type().IsMapType() {
				return cty.NilVal, function.NewArgErrorf(1, "template variables must be an object or a map")
			}
			inner := make(map[string]function.Function, len(fns))
			for k, f := range fns {
				if k != "templatefile" {
					inner[k] = f
				}
			}
			ctx := &hcl.EvalContext{Variables: vars.AsValueMap(), Functions: inner}
			out, diags := tmpl.Value(ctx)
			if diags.HasErrors() {
				return cty.NilVal, diags
			}
			return out, nil
		},
	})
}
