package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"text/tabwriter"

	"github.com/google/go-containerregistry/pkg/logs"
	"github.com/spf13/cobra"

	"github.com/gpuforge/gpuforge/builders/registry"
	"github.com/gpuforge/gpuforge/recipes"
)

// registryFlags are the flags of the commands that talk to registries: push, copy, inspect.
type registryFlags struct {
	recipe   string
	rf       recipeFlags
	insecure bool
	caFiles  []string
	verbose  bool
}

func (f *registryFlags) register(cmd *cobra.Command, verbose bool) {
	cmd.Flags().StringVar(&f.recipe, "recipe", "", "use the registry blocks (credentials, ca_file, insecure) of this recipe file or directory")
	f.rf.register(cmd)
	cmd.Flags().BoolVar(&f.insecure, "insecure", false, "allow plain HTTP to the registries named (always allowed for localhost, 127.0.0.0/8 and ::1); TLS certificates are still verified")
	cmd.Flags().StringArrayVar(&f.caFiles, "ca-file", nil, "also trust the PEM CA certificates in this file for TLS to the registries (repeatable)")
	if verbose {
		cmd.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "log each blob and manifest as it is pushed, and retries, to stderr")
	}
}

// options loads the recipe, when --recipe is given, and returns the registry options and the
// recipe (nil without --recipe), whose sensitive values output must not show.
func (f *registryFlags) options(cmd *cobra.Command) ([]registry.Option, *recipes.Recipe, error) {
	var opts []registry.Option
	var r *recipes.Recipe
	if f.recipe != "" {
		loaded, diags, err := f.rf.load(cmd, f.recipe, "text")
		if err != nil {
			return nil, nil, err
		}
		if diags.HasErrors() {
			return nil, nil, exitf(ExitRecipe, "")
		}
		r = loaded
		opts = append(opts, registry.WithRegistries(r.Registries))
	}
	for _, c := range f.caFiles {
		opts = append(opts, registry.WithCAFile(c))
	}
	opts = append(opts, registry.WithInsecure(f.insecure))
	if f.verbose {
		l := log.New(cmd.ErrOrStderr(), "", 0)
		if r != nil {
			l = log.New(redactWriter{cmd.ErrOrStderr(), r}, "", 0)
		}
		logs.Progress, logs.Warn = l, l
	}
	return opts, r, nil
}

// registryContext is cmd's context, cancelled by SIGINT or SIGTERM.
func registryContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
}

// registryFailure turns an operation's error into the exit: 130 when interrupted, else 4 with
// the typed error's message (which names the registry and repository and holds no credential).
func registryFailure(ctx context.Context, err error, r *recipes.Recipe) error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return exitf(ExitInterrupted, "interrupted")
	}
	return exitf(ExitFailed, "%s", r.Redact(err.Error()))
}

func newPushCmd() *cobra.Command {
	var f registryFlags
	var jobs int
	var refName string
	cmd := &cobra.Command{
		Use:   "push <oci-layout-dir|tarball> <ref>",
		Short: "Push an OCI layout or an image tarball to a registry",
		Long: `Push uploads an image or a multi-platform index to a registry and prints the pushed
reference with its digest (registry/repository@sha256:...).

The source is an OCI image layout directory, a tar (or tar.gz) of one as BuildKit's oci exporter
writes, or a docker tarball (docker save). From a layout whose index.json lists several manifests,
--ref-name picks the one with that org.opencontainers.image.ref.name annotation; without it all of
them are pushed as one index. Manifests are pushed byte for byte, so the digest is the source's.

Blobs the repository already has are skipped; when the tag already points at the same digest
nothing is uploaded. Uploads run --jobs at a time. Answers 5xx and 429 (honouring Retry-After)
and dropped connections are retried a few times with backoff; other 4xx are not.

Credentials come from docker's config.json and credential helpers, $NGC_API_KEY for nvcr.io,
the AWS SDK's default chain for ECR, or the registry blocks of --recipe. Plain HTTP is used
only for loopback registries unless --insecure is given.`,
		Example: `  gpuforge push ./out/trainer-oci registry.example.com/ml/trainer:24.10
  gpuforge push --ca-file corp-ca.pem trainer.tar registry.corp.example/ml/trainer:1
  gpuforge push --recipe examples/ngc-pytorch.hcl ./out/oci 123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:1`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if jobs < 1 {
				return exitf(ExitUsage, "--jobs must be at least 1, not %d", jobs)
			}
			opts, r, err := f.options(cmd)
			if err != nil {
				return err
			}
			opts = append(opts, registry.WithJobs(jobs), registry.WithRefName(refName))
			ctx, stop := registryContext(cmd)
			defer stop()
			d, err := registry.Push(ctx, args[0], args[1], opts...)
			if err != nil {
				return registryFailure(ctx, err, r)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), d.String())
			return err
		},
	}
	f.register(cmd, true)
	cmd.Flags().IntVar(&jobs, "jobs", registry.DefaultJobs, "how many blobs to upload at once")
	cmd.Flags().StringVar(&refName, "ref-name", "", "push the layout manifest with this org.opencontainers.image.ref.name")
	return cmd
}

func newCopyCmd() *cobra.Command {
	var f registryFlags
	var jobs int
	cmd := &cobra.Command{
		Use:   "copy <src-ref> <dst-ref>",
		Short: "Copy an image or index, every platform, between repositories or registries",
		Long: `Copy copies the image or multi-platform index at src-ref to dst-ref, every platform and
attestation manifest included, and prints dst-ref's repository with the digest, which is
src-ref's: manifests are copied byte for byte. Blobs the destination has are skipped; within one
registry the others are mounted from the source repository instead of uploaded.

Credentials, TLS and retries are as for push.`,
		Example: `  gpuforge copy nvcr.io/nvidia/pytorch:24.10-py3 registry.example.com/mirror/pytorch:24.10-py3
  gpuforge copy registry.example.com/ml/trainer:rc1 registry.example.com/ml/trainer:stable`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if jobs < 1 {
				return exitf(ExitUsage, "--jobs must be at least 1, not %d", jobs)
			}
			opts, r, err := f.options(cmd)
			if err != nil {
				return err
			}
			opts = append(opts, registry.WithJobs(jobs))
			ctx, stop := registryContext(cmd)
			defer stop()
			d, err := registry.Copy(ctx, args[0], args[1], opts...)
			if err != nil {
				return registryFailure(ctx, err, r)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), d.String())
			return err
		},
	}
	f.register(cmd, true)
	cmd.Flags().IntVar(&jobs, "jobs", registry.DefaultJobs, "how many blobs to copy at once")
	return cmd
}

func newInspectCmd() *cobra.Command {
	var f registryFlags
	var format string
	cmd := &cobra.Command{
		Use:   "inspect <ref>",
		Short: "Describe an image or index in a registry: digest, platforms, sizes, metadata",
		Long: `Inspect reads an image's or index's manifests and configs, without pulling layers, and
prints its digest and media type, each platform with its layer count and size (compressed, as a
pull transfers it), and the dev.gpuforge.* and org.opencontainers.image.* annotations and labels.
--format json prints everything, config labels and annotations of every platform included.`,
		Example: `  gpuforge inspect registry.example.com/ml/trainer:24.10
  gpuforge inspect --format json registry.example.com/ml/trainer@sha256:...`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return exitf(ExitUsage, "--format must be text or json, not %q", format)
			}
			opts, r, err := f.options(cmd)
			if err != nil {
				return err
			}
			ctx, stop := registryContext(cmd)
			defer stop()
			d, err := registry.Inspect(ctx, args[0], opts...)
			if err != nil {
				return registryFailure(ctx, err, r)
			}
			w := io.Writer(cmd.OutOrStdout())
			if r != nil {
				w = redactWriter{w, r}
			}
			if format == "json" {
				out, err := json.MarshalIndent(d, "", "  ")
				if err != nil {
					return err
				}
				_, err = w.Write(append(out, '\n'))
				return err
			}
			return writeDescription(w, d)
		},
	}
	f.register(cmd, false)
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

// writeDescription prints what Inspect found as text.
func writeDescription(w io.Writer, d *registry.Description) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Reference:\t%s\n", d.Reference)
	fmt.Fprintf(tw, "Digest:\t%s\n", d.Digest)
	fmt.Fprintf(tw, "Media type:\t%s (%d bytes)\n", d.MediaType, d.Size)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PLATFORM\tLAYERS\tSIZE\tDIGEST")
	for _, p := range d.Platforms {
		layers, size := fmt.Sprint(p.Layers), registrySize(p.Size)
		if p.Size == 0 {
			layers, size = "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Platform, layers, size, p.Digest)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(d.Metadata) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Metadata:")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, k := range slices.Sorted(maps.Keys(d.Metadata)) {
			fmt.Fprintf(tw, "  %s\t%s\n", k, d.Metadata[k])
		}
		return tw.Flush()
	}
	return nil
}

// registrySize formats n bytes with binary units.
func registrySize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/unit, 0
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTP"[i])
}
