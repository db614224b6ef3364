package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gpuforge/gpuforge/recipes"
)

func newCheckCmd() *cobra.Command {
	var rf recipeFlags
	var format string
	cmd := &cobra.Command{
		Use:   "check [path]",
		Short: "Check a recipe without building anything",
		Long: `Check loads a recipe (a file, or a directory of *.hcl files; default ".") and reports every
problem at once, each with its file, line and column: syntax and type errors, unknown or cyclic
references, unknown attributes, and gpuforge's own checks (a driver in a container image, a machine
image without a kernel, a framework release newer than the driver, open kernel modules on GPUs
older than Turing, bad platforms and image references, one tag produced by two targets).

It never touches the network. Exit code 0 when the recipe has no errors (warnings are allowed),
1 when it has errors.`,
		Example: `  gpuforge check examples/quickstart.hcl
  gpuforge check --format json recipes/ | jq '.diagnostics[] | .summary'`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return exitf(ExitUsage, "--format must be text or json, not %q", format)
			}
			path := pathArg(args)
			r, diags, err := rf.load(cmd, path, format)
			if err != nil {
				return err
			}
			if format == "json" {
				if err := recipes.WriteDiagnostics(cmd.OutOrStdout(), r, diags, "json", 0, false); err != nil {
					return err
				}
			} else if !diags.HasErrors() {
				n := len(r.Targets())
				fmt.Fprintf(cmd.OutOrStdout(), "%s is valid: %d %s", path, n, map[bool]string{true: "target", false: "targets"}[n == 1])
				if n := len(diags); n > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), ", %d %s", n, map[bool]string{true: "warning", false: "warnings"}[n == 1])
				}
				fmt.Fprintln(cmd.OutOrStdout(), ".")
			}
			if diags.HasErrors() {
				return exitf(ExitRecipe, "")
			}
			return nil
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}
