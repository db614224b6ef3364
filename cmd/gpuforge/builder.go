package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client"
	"github.com/spf13/cobra"

	"github.com/gpuforge/gpuforge/builders/buildkit"
	"github.com/gpuforge/gpuforge/recipes"
)

// Flags that choose and reach the builder. --builder is the root command's (persistent); the
// TLS flags are the builder command's until the root command takes them over.
const (
	builderFlag   = "builder"
	tlsCACertFlag = "tlscacert"
	tlsCertFlag   = "tlscert"
	tlsKeyFlag    = "tlskey"
)

func newBuilderCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "builder",
		Short: "Show, clean up and stop the BuildKit daemon gpuforge builds with",
		Long: `The builder is the BuildKit daemon gpuforge builds with: the one --builder names
(unix:///path/to/buildkitd.sock, or tcp://host:port with --tlscacert, --tlscert and --tlskey),
else the one BUILDKIT_HOST names, else gpuforge's own local buildkitd, which gpuforge starts
when it is not running and which keeps running between builds. Its state (build cache, socket,
log) is under $GPUFORGE_STATE_DIR, else $XDG_STATE_HOME/gpuforge, else ~/.local/state/gpuforge.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newBuilderStatusCmd(), newBuilderDUCmd(), newBuilderPruneCmd(), newBuilderStopCmd())
	return cmd
}

// flagString returns the value of the flag name, or "" when cmd has no such flag.
func flagString(cmd *cobra.Command, name string) string {
	v, err := cmd.Flags().GetString(name)
	if err != nil {
		return ""
	}
	return v
}

// builderAddress returns the builder's address from --builder, else BUILDKIT_HOST, and where it
// came from; an empty address means gpuforge's local daemon.
func builderAddress(cmd *cobra.Command) (addr, source string) {
	if addr := flagString(cmd, builderFlag); addr != "" {
		return addr, "--" + builderFlag
	}
	if addr := os.Getenv(buildkit.BuildkitHostEnv); addr != "" {
		return addr, buildkit.BuildkitHostEnv
	}
	return "", ""
}

// connectFromFlags connects to the builder the command line names (--builder, else
// BUILDKIT_HOST, else gpuforge's local daemon, started when it is not running), with TLS from
// --tlscacert, --tlscert and --tlskey when any is set. Flags the command does not have count as
// unset. Its errors are *exitError: ExitUsage for an unusable address or flags, ExitFailed
// when the builder cannot be reached or started. The caller closes the client.
func connectFromFlags(cmd *cobra.Command) (*client.Client, error) {
	addr, _ := builderAddress(cmd)
	return connectTo(cmd, addr)
}

// connectTo is connectFromFlags with the address given: "" for gpuforge's local daemon.
func connectTo(cmd *cobra.Command, addr string) (*client.Client, error) {
	opts := []buildkit.ConnectOption{buildkit.WithAddress(addr)}
	ca, cert, key := flagString(cmd, tlsCACertFlag), flagString(cmd, tlsCertFlag), flagString(cmd, tlsKeyFlag)
	if ca != "" || cert != "" || key != "" {
		if addr == "" {
			return nil, exitf(ExitUsage, "--%s, --%s and --%s are for a tcp:// builder; name it with --%s or %s", tlsCACertFlag, tlsCertFlag, tlsKeyFlag, builderFlag, buildkit.BuildkitHostEnv)
		}
		if (cert == "") != (key == "") {
			return nil, exitf(ExitUsage, "--%s and --%s go together", tlsCertFlag, tlsKeyFlag)
		}
		opts = append(opts, buildkit.WithTLS(ca, cert, key, ""))
	}
	c, err := buildkit.Connect(cmd.Context(), opts...)
	if err != nil {
		var ae *buildkit.AddressError
		if errors.As(err, &ae) {
			return nil, exitf(ExitUsage, "%v", err)
		}
		return nil, exitf(ExitFailed, "%v", err)
	}
	return c, nil
}

func newBuilderStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show which builder gpuforge uses, its BuildKit version, workers and platforms",
		Long: `Shows the builder gpuforge uses. For gpuforge's local buildkitd it shows whether it runs,
its pid, socket, state directory and log, and never starts it. For a running builder it shows
the BuildKit version and each worker with the platforms it builds for.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			addr, source := builderAddress(cmd)
			if addr == "" {
				st, err := buildkit.LocalStatus(cmd.Context(), "")
				if err != nil {
					return exitf(ExitFailed, "%v", err)
				}
				fmt.Fprintf(w, "builder:   gpuforge's local buildkitd\n")
				if !st.Ready {
					state := "not running; the next build starts it"
					if st.Running {
						state = fmt.Sprintf("pid %d runs but does not answer; see its log, or run `gpuforge builder stop`", st.PID)
					}
					fmt.Fprintf(w, "status:    %s\n", state)
					fmt.Fprintf(w, "address:   %s\nstate:     %s\nlog:       %s\n", st.Address, st.StateDir, st.LogPath)
					return nil
				}
				fmt.Fprintf(w, "status:    running\n")
				if st.PID != 0 {
					fmt.Fprintf(w, "pid:       %d\n", st.PID)
				}
				fmt.Fprintf(w, "address:   %s\nstate:     %s\nlog:       %s\n", st.Address, st.StateDir, st.LogPath)
				addr = st.Address
			} else {
				fmt.Fprintf(w, "builder:   %s (from %s)\n", addr, source)
			}
			c, err := connectTo(cmd, addr)
			if err != nil {
				return err
			}
			defer c.Close()
			info, err := buildkit.Info(cmd.Context(), c)
			if err != nil {
				return exitf(ExitFailed, "builder %s: %v", addr, err)
			}
			v := info.Version
			fmt.Fprintf(w, "buildkit:  %s", v.Version)
			if v.Revision != "" {
				fmt.Fprintf(w, " (revision %s)", v.Revision)
			}
			fmt.Fprintln(w)
			fmt.Fprintf(w, "platforms: %s\n", strings.Join(info.Platforms(), ", "))
			for _, wk := range info.Workers {
				var ps []string
				for _, p := range wk.Platforms {
					ps = append(ps, platforms.Format(p))
				}
				kind := wk.Labels["org.mobyproject.buildkit.worker.executor"]
				if s := wk.Labels["org.mobyproject.buildkit.worker.snapshotter"]; s != "" {
					kind += ", " + s
				}
				fmt.Fprintf(w, "worker:    %s (%s) %s\n", wk.ID, kind, strings.Join(ps, ", "))
			}
			return nil
		},
	}
}

func newBuilderDUCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "du",
		Short: "Show the builder's cache records and the disk space they use",
		Long: `Lists the builder's cache records, largest first: ID, whether pruning may reclaim it (it is
not in use), its size and when a build last used it; then the reclaimable and total sizes.
Starts gpuforge's local buildkitd when it is the builder and does not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connectFromFlags(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			records, err := c.DiskUsage(cmd.Context())
			if err != nil {
				return exitf(ExitFailed, "asking the builder for its disk usage: %v", err)
			}
			writeDiskUsage(cmd.OutOrStdout(), records, time.Now())
			return nil
		},
	}
}

// writeDiskUsage prints records as a table, largest first, then the reclaimable and total sizes.
func writeDiskUsage(w io.Writer, records []*client.UsageInfo, now time.Time) {
	records = slices.Clone(records)
	slices.SortFunc(records, func(a, b *client.UsageInfo) int {
		return cmp.Or(cmp.Compare(b.Size, a.Size), strings.Compare(a.ID, b.ID))
	})
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRECLAIMABLE\tSIZE\tLAST USED")
	var total, reclaimable int64
	for _, r := range records {
		total += r.Size
		rec := "no"
		if !r.InUse {
			rec = "yes"
			reclaimable += r.Size
		}
		used := "never"
		if r.LastUsedAt != nil {
			used = sinceString(now.Sub(*r.LastUsedAt)) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.ID, rec, byteString(r.Size), used)
	}
	tw.Flush()
	fmt.Fprintf(w, "Reclaimable: %s\nTotal:       %s\n", byteString(reclaimable), byteString(total))
}

func newBuilderPruneCmd() *cobra.Command {
	var (
		all          bool
		keepDuration time.Duration
		keepStorage  string
	)
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove the builder's cache records that no build uses",
		Long: `Removes cache records that no running build uses and prints the space freed. --all also
removes internal and frontend records; --keep-duration keeps records used more recently than
that; --keep-storage keeps the most recently used records up to that size (40GiB, 512MiB).
Starts gpuforge's local buildkitd when it is the builder and does not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var maxUsed int64
			if keepStorage != "" {
				n, err := recipes.ParseSize(keepStorage)
				if err != nil {
					return exitf(ExitUsage, "--keep-storage: %v", err)
				}
				maxUsed = n
			}
			if keepDuration < 0 {
				return exitf(ExitUsage, "--keep-duration must not be negative")
			}
			c, err := connectFromFlags(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			opts := []client.PruneOption{client.WithKeepOpt(keepDuration, 0, maxUsed, 0)}
			if all {
				opts = append(opts, client.PruneAll)
			}
			ch := make(chan client.UsageInfo)
			summed := make(chan struct{})
			var freed int64
			var n int
			go func() {
				defer close(summed)
				for r := range ch {
					freed += r.Size
					n++
				}
			}()
			err = c.Prune(cmd.Context(), ch, opts...)
			close(ch)
			<-summed
			if err != nil {
				return exitf(ExitFailed, "pruning the builder's cache (freed %s before the error): %v", byteString(freed), err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Freed %s (%d bytes) in %d cache records\n", byteString(freed), freed, n)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&all, "all", false, "also remove internal and frontend cache records")
	f.DurationVar(&keepDuration, "keep-duration", 0, "keep records used within this duration (e.g. 24h)")
	f.StringVar(&keepStorage, "keep-storage", "", "keep up to this much of the most recently used cache (e.g. 20GiB)")
	return cmd
}

func newBuilderStopCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Stop gpuforge's local buildkitd; its build cache stays for the next one",
		Long: `Stops gpuforge's local buildkitd (SIGTERM, then SIGKILL after 10 seconds) and removes its
socket and pid file. The build cache stays, and the next build starts a new daemon that uses
it. A builder named by --builder or BUILDKIT_HOST is not gpuforge's to stop.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := context.WithoutCancel(cmd.Context()) // a stop half done helps nobody
			w := cmd.OutOrStdout()
			if addr, source := builderAddress(cmd); addr != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "gpuforge: note: builds use %s (from %s); this stops gpuforge's local buildkitd only\n", addr, source)
			}
			st, err := buildkit.LocalStatus(ctx, "")
			if err != nil {
				return exitf(ExitFailed, "%v", err)
			}
			switch err := buildkit.StopLocal(ctx, ""); {
			case errors.Is(err, buildkit.ErrNotRunning):
				fmt.Fprintf(w, "gpuforge's local buildkitd is not running (state %s)\n", st.StateDir)
			case err != nil:
				return exitf(ExitFailed, "%v", err)
			default:
				fmt.Fprintf(w, "Stopped gpuforge's local buildkitd (pid %d); its cache stays in %s\n", st.PID, st.StateDir)
			}
			return nil
		},
	}
}

// byteString formats n bytes with binary units, as recipes.ParseSize reads them.
func byteString(n int64) string {
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

// sinceString formats a duration coarsely: 45s, 12m, 3h, 5d.
func sinceString(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}
