package main

import (
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/gpuforge/gpuforge/recipes"
)

// recipeFlags are the flags every command that loads a recipe takes.
type recipeFlags struct {
	vars     []string
	varFiles []string
}

func (f *recipeFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.vars, "var", nil, "set a variable: --var name=value (repeatable; wins over everything else)")
	cmd.Flags().StringArrayVar(&f.varFiles, "var-file", nil, "read variables from an HCL file of name = value lines (repeatable)")
}

// load loads the recipe at path and prints its diagnostics to stderr (or, as JSON, to stdout).
// It returns the recipe and whether it has errors.
func (f *recipeFlags) load(cmd *cobra.Command, path, format string) (*recipes.Recipe, hcl.Diagnostics, error) {
	r, diags := recipes.Load(path, recipes.Options{Vars: f.vars, VarFiles: f.varFiles})
	if format == "json" {
		return r, diags, nil
	}
	if len(diags) > 0 {
		color := isTerminal(cmd.ErrOrStderr()) && os.Getenv("NO_COLOR") == ""
		if err := recipes.WriteDiagnostics(cmd.ErrOrStderr(), r, diags, "text", terminalWidth(), color); err != nil {
			return r, diags, err
		}
	}
	return r, diags, nil
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func terminalWidth() uint {
	return 100
}

func pathArg(args []string) string {
	if len(args) == 0 {
		return "."
	}
	return args[0]
}
