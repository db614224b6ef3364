package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gpuforge/gpuforge/builders/ami"
	"github.com/gpuforge/gpuforge/pipeline"
	"github.com/gpuforge/gpuforge/recipes"
)

// awsFlags select the AWS account, region and endpoint, for build's AMI stages and the ami command.
type awsFlags struct {
	profile, region, endpoint string
}

func (f *awsFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.profile, "aws-profile", "", "AWS profile of the shared config files (default: AWS_PROFILE, else the default chain)")
	fl.StringVar(&f.region, "aws-region", "", "AWS region when the recipe names none (default: AWS_REGION or the profile's)")
	fl.StringVar(&f.endpoint, "aws-endpoint", "", "send every AWS call to this endpoint instead of AWS's (a test endpoint, a VPC endpoint)")
}

func (f *awsFlags) config(ctx context.Context, region string) (ami.Config, error) {
	c := ami.Config{Profile: f.profile, Region: region, Endpoint: f.endpoint}
	if c.Region == "" {
		c.Region = f.region
	}
	return c, nil
}

// bakeAMI runs a machine image's AMI stages on its raw disk: upload through the EBS direct APIs,
// registration, copies, sharing and the SSM parameter. A failure removes what the run created.
//
// The snapshot's client token comes from the disk's content and the AMI's name, not from the
// build: a rerun of the same disk after a run was killed mid-upload gets the pending snapshot
// back from StartSnapshot (EBS keeps the token for a while) and resends its blocks, instead of
// leaving it behind.
func (b *buildRun) bakeAMI(ctx context.Context, m *recipes.MachineImage, raw, rawSHA256, buildID string, stderr io.Writer) ([]pipeline.AMIRecord, error) {
	home := ""
	if len(m.AMI.Regions) > 0 {
		home = m.AMI.Regions[0]
	}
	c, err := b.aws.config(ctx, home)
	if err != nil {
		return nil, err
	}
	cfg, err := ami.LoadConfig(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	log := &prefixWriter{w: stderr, prefix: "gpuforge: " + recipes.KindMachineImage + "." + m.Name + ": "}
	bake := &ami.Bake{
		BuildID: buildID,
		AMI:     m.AMI,
		Disk:    raw,
		Upload:  ami.UploadOptions{ClientToken: clientToken(m.AMI.Name, rawSHA256), Progress: uploadProgress(log)},
		Log:     log,
	}
	res, err := bake.Run(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return res.Images, nil
}

func newAMICmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ami",
		Short: "AMIs gpuforge made: remove the leftovers of failed runs",
	}
	cmd.AddCommand(newAMIGCCmd())
	return cmd
}

func newAMIGCCmd() *cobra.Command {
	var af awsFlags
	var regions, keep []string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "gc --region REGION... [--keep BUILD_ID]... [--dry-run]",
		Short: "Remove AMIs, snapshots and SSM parameters left by failed gpuforge runs",
		Long: `Every resource gpuforge creates in AWS carries the tag gpuforge:build-id. A run that fails or
is interrupted removes what it created; a run whose process was killed cannot. gc lists the
images, snapshots and SSM parameters tagged by gpuforge in the given regions, keeps those of the
builds named by --keep and those in use by a kept image, and deletes the rest: images first,
then their snapshots, then parameters that pointed at a deleted image. --dry-run lists only.

Keep the build ids of the AMIs you ship (the build manifest records them) with --keep.`,
		Example: `  gpuforge ami gc --region us-east-1 --dry-run
  gpuforge ami gc --region us-east-1 --region us-west-2 --keep 20261202T081500Z-4f2a`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(regions) == 0 {
				return exitf(ExitUsage, "name the regions to clean with --region")
			}
			ctx, stop := pipeline.SignalContext(cmd.Context())
			defer stop()
			c, _ := af.config(ctx, regions[0])
			cfg, err := ami.LoadConfig(ctx, c)
			if err != nil {
				return exitf(ExitFailed, "AWS configuration: %s", err)
			}
			keepSet := map[string]bool{}
			for _, k := range keep {
				keepSet[k] = true
			}
			items, err := ami.GC(ctx, cfg, regions, keepSet, dryRun, cmd.ErrOrStderr())
			printGC(cmd.OutOrStdout(), items, dryRun)
			if err != nil {
				if ctx.Err() != nil {
					return exitf(ExitInterrupted, "interrupted: %s", err)
				}
				return exitf(ExitFailed, "%s", err)
			}
			return nil
		},
	}
	af.register(cmd)
	cmd.Flags().StringArrayVar(&regions, "region", nil, "a region to clean (repeatable)")
	cmd.Flags().StringArrayVar(&keep, "keep", nil, "a build id whose resources stay (repeatable)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be deleted, delete nothing")
	return cmd
}

func printGC(w io.Writer, items []ami.GCItem, dryRun bool) {
	if len(items) == 0 {
		fmt.Fprintln(w, "nothing to remove")
		return
	}
	sort.SliceStable(items, func(i, j int) bool { return items[i].Region < items[j].Region })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tKIND\tID\tBUILD")
	for _, it := range items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", it.Region, it.Kind, it.ID, it.BuildID)
	}
	tw.Flush()
	verb := "removed"
	if dryRun {
		verb = "would remove (dry run)"
	}
	fmt.Fprintf(w, "%s %d %s\n", verb, len(items), plural(len(items), "resource"))
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// uploadProgress reports the upload every tenth of its blocks: a line each, which reads well in
// CI logs as on a terminal.
func uploadProgress(w io.Writer) func(done, total int64) {
	last := int64(-1)
	return func(done, total int64) {
		if total <= 0 {
			return
		}
		tenth := done * 10 / total
		if tenth == last {
			return
		}
		last = tenth
		fmt.Fprintf(w, "upload %3d%% (%d of %d blocks of 512 KiB)\n", tenth*10, done, total)
	}
}

// clientToken is StartSnapshot's idempotency token for a disk and an AMI name: at most 64
// characters, as the API allows.
func clientToken(name, diskSHA256 string) string {
	sum := sha256.Sum256([]byte(name + "\x00" + diskSHA256))
	return "gpuforge-" + hex.EncodeToString(sum[:])[:48]
}
