package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/pmezard/go-difflib/difflib"
	"github.com/spf13/cobra"

	"github.com/gpuforge/gpuforge/recipes"
)

func newFmtCmd() *cobra.Command {
	var check, diff, recursive bool
	cmd := &cobra.Command{
		Use:   "fmt [path…]",
		Short: "Rewrite recipe files in the canonical format",
		Long: `Fmt rewrites recipe files (*.hcl) in HCL's canonical layout: aligned equals signs, two-space
indents, normalised spacing. Paths are files or directories (default "."); "-" reads standard
input and writes the result to standard output.

With -check nothing is written: fmt lists the files that are not formatted and exits 3 if there
are any. With -diff it prints what would change as a unified diff. Files with syntax errors are
reported with their positions and left alone (exit 1).`,
		Example: `  gpuforge fmt examples/
  gpuforge fmt -check -diff .`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"."}
			}
			if len(args) == 1 && args[0] == "-" {
				src, err := io.ReadAll(cmd.InOrStdin())
				if err != nil {
					return err
				}
				out, r, diags := formatSource("<stdin>", src)
				if diags.HasErrors() {
					_ = recipes.WriteDiagnostics(cmd.ErrOrStderr(), r, diags, "text", terminalWidth(), false)
					return exitf(ExitRecipe, "")
				}
				_, err = cmd.OutOrStdout().Write(out)
				return err
			}
			files, err := hclFiles(args, recursive)
			if err != nil {
				return exitf(ExitUsage, "%s", err)
			}
			var unformatted int
			var broken bool
			for _, f := range files {
				src, err := os.ReadFile(f)
				if err != nil {
					return exitf(ExitFailed, "%s", err)
				}
				out, r, diags := formatSource(f, src)
				if diags.HasErrors() {
					_ = recipes.WriteDiagnostics(cmd.ErrOrStderr(), r, diags, "text", terminalWidth(), false)
					broken = true
					continue
				}
				if bytes.Equal(src, out) {
					continue
				}
				unformatted++
				fmt.Fprintln(cmd.OutOrStdout(), f)
				if diff {
					ud := difflib.UnifiedDiff{A: difflib.SplitLines(string(src)), B: difflib.SplitLines(string(out)),
						FromFile: f, ToFile: f + " (formatted)", Context: 3}
					if err := difflib.WriteUnifiedDiff(cmd.OutOrStdout(), ud); err != nil {
						return err
					}
				}
				if !check {
					st, _ := os.Stat(f)
					if err := os.WriteFile(f, out, st.Mode().Perm()); err != nil {
						return exitf(ExitFailed, "%s", err)
					}
				}
			}
			switch {
			case broken:
				return exitf(ExitRecipe, "")
			case check && unformatted > 0:
				return exitf(ExitUnformatted, "%d file(s) need formatting; run gpuforge fmt", unformatted)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "do not write; exit 3 if any file needs formatting")
	cmd.Flags().BoolVar(&diff, "diff", false, "print a unified diff of the changes")
	cmd.Flags().BoolVar(&recursive, "recursive", false, "also format *.hcl in subdirectories")
	return cmd
}

// formatSource checks that src parses and returns it in canonical form; on syntax errors it
// returns the diagnostics and a recipe holding the file, so they render with snippets.
func formatSource(name string, src []byte) ([]byte, *recipes.Recipe, hcl.Diagnostics) {
	f, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, &recipes.Recipe{Files: map[string]*hcl.File{name: f}}, diags
	}
	return hclwrite.Format(src), nil, nil
}

func hclFiles(paths []string, recursive bool) ([]string, error) {
	var out []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && path != p && !recursive {
				return filepath.SkipDir
			}
			if !d.IsDir() && filepath.Ext(path) == ".hcl" {
				out = append(out, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Strings(out)
	return out, nil
}
