package main

import (
	"encoding/json"

	"github.com/spf13/cobra"

	"github.com/gpuforge/gpuforge/pipeline"
	"github.com/gpuforge/gpuforge/recipes"
)

func newPlanCmd() *cobra.Command {
	var rf recipeFlags
	var format string
	var targets []string
	cmd := &cobra.Command{
		Use:   "plan [path]",
		Short: "Show what a build would do: targets, stages and their order",
		Long: `Plan loads and checks a recipe, then prints the resolved build graph without running it:
the selected targets, the stages that build each one (bootstrap or resolve a base, build, push,
assemble a disk, boot it, upload and register an AMI, validate on GPUs), what every stage will run,
and what it waits for. Shared stages appear once.

Select targets with -t (repeatable): a target name, kind.name, or a group. Without -t, the group
"default" is planned if the recipe has one, else every target. Sensitive values never appear.`,
		Example: `  gpuforge plan examples/quickstart.hcl
  gpuforge plan -t trainer --format json examples/ngc-pytorch.hcl`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return exitf(ExitUsage, "--format must be text or json, not %q", format)
			}
			r, diags, err := rf.load(cmd, pathArg(args), "text")
			if err != nil {
				return err
			}
			if diags.HasErrors() {
				return exitf(ExitRecipe, "")
			}
			p, err := pipeline.NewPlan(r, targets)
			if err != nil {
				return exitf(ExitUsage, "%s", r.Redact(err.Error()))
			}
			if format == "json" {
				out, err := json.MarshalIndent(p, "", "  ")
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write([]byte(r.Redact(string(out)) + "\n"))
				return err
			}
			return p.WriteText(redactWriter{cmd.OutOrStdout(), r})
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	cmd.Flags().StringArrayVarP(&targets, "target", "t", nil, "plan only this target or group, with what it needs (repeatable)")
	return cmd
}

// redactWriter removes a recipe's sensitive values from everything written through it. Callers
// write whole documents, so a value never straddles two writes.
type redactWriter struct {
	w interface{ Write([]byte) (int, error) }
	r *recipes.Recipe
}

func (rw redactWriter) Write(p []byte) (int, error) {
	if _, err := rw.w.Write([]byte(rw.r.Redact(string(p)))); err != nil {
		return 0, err
	}
	return len(p), nil
}
