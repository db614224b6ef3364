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
	"sync"
	"text/tabwriter"
	"time"

	"github.com/containerd/platforms"
	"github.com/hashicorp/hcl/v2"
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
		Short: "List builders, show, clean up and stop the BuildKit daemon gpuforge builds with",
		Long: `The builder is the BuildKit daemon gpuforge builds with: the one --builder names
(unix:///path/to/buildkitd.sock, or tcp://host:port with --tlscacert, --tlscert and --tlskey),
else the one BUILDKIT_HOST names, else gpuforge's own local buildkitd, which gpuforge starts
when it is not running and which keeps running between builds. Its state (build cache, socket,
log) is under $GPUFORGE_STATE_DIR, else $XDG_STATE_HOME/gpuforge, else ~/.local/state/gpuforge.

--builder may also name a builder of several nodes (BuildKit daemons, each with the platforms it
builds natively) defined in the builders file: $GPUFORGE_BUILDERS, else
$XDG_CONFIG_HOME/gpuforge/builders.hcl. A multi-platform image is built on the nodes of its
platforms and merged into one index. ls lists the builders, inspect shows one's nodes.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newBuilderLsCmd(), newBuilderInspectCmd(), newBuilderStatusCmd(), newBuilderDUCmd(), newBuilderPruneCmd(), newBuilderStopCmd())
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

// namedBuilder returns the builder definition --builder names when its value is a name, not an
// address, from the builders file (recipes.DefaultBuildersFile), and the file's path. It returns
// nil for an address or no --builder. Its errors are *exitError: ExitRecipe for a builders file
// with errors (printed with file, line and column), ExitUsage for an unknown name.
func namedBuilder(cmd *cobra.Command) (*recipes.Builder, string, error) {
	name := flagString(cmd, builderFlag)
	if name == "" || strings.Contains(name, "://") {
		return nil, "", nil
	}
	file := recipes.DefaultBuildersFile()
	builders, err := loadBuilders(cmd, file)
	if err != nil {
		return nil, file, err
	}
	if b := recipes.FindBuilder(builders, name); b != nil {
		return b, file, nil
	}
	var names []string
	for _, b := range builders {
		names = append(names, b.Name)
	}
	defined := "defines no builder"
	if len(names) > 0 {
		defined = "defines " + strings.Join(names, ", ")
	}
	if file == "" {
		file = "the builders file"
	}
	return nil, file, exitf(ExitUsage, "--builder %q: no builder of that name (%s %s); --builder takes a builder's name or an address, unix:///path/to/buildkitd.sock or tcp://host:port", name, file, defined)
}

// loadBuilders reads the builders file, printing its diagnostics; errors make an ExitRecipe.
func loadBuilders(cmd *cobra.Command, file string) ([]*recipes.Builder, error) {
	builders, diags := recipes.LoadBuilders(file)
	if len(diags) > 0 {
		files := map[string]*hcl.File{}
		if data, err := os.ReadFile(file); err == nil {
			files[file] = &hcl.File{Bytes: data}
		}
		color := isTerminal(cmd.ErrOrStderr()) && os.Getenv("NO_COLOR") == ""
		_ = hcl.NewDiagnosticTextWriter(cmd.ErrOrStderr(), files, terminalWidth(), color).WriteDiagnostics(diags)
	}
	if diags.HasErrors() {
		return nil, exitf(ExitRecipe, "the builders file %s has errors", file)
	}
	return builders, nil
}

// builderConn is the builder a build runs on: its nodes, connected, and the node that builds
// for this machine's platform, which builds machine images and runs in-image checks.
type builderConn struct {
	name    string // the builder definition's name; "" for an address or the local daemon
	nodes   []*buildkit.Node
	primary *client.Client
}

func (b *builderConn) Close() { buildkit.CloseNodes(b.nodes) }

// connectBuilder connects to the builder --builder names: a builder definition's nodes, all of
// them, or one daemon as connectFromFlags does.
func connectBuilder(cmd *cobra.Command) (*builderConn, error) {
	def, _, err := namedBuilder(cmd)
	if err != nil {
		return nil, err
	}
	if def == nil {
		c, err := connectFromFlags(cmd)
		if err != nil {
			return nil, err
		}
		return &builderConn{nodes: []*buildkit.Node{{Name: "default", Client: c}}, primary: c}, nil
	}
	if flagString(cmd, tlsCACertFlag) != "" || flagString(cmd, tlsCertFlag) != "" || flagString(cmd, tlsKeyFlag) != "" {
		return nil, exitf(ExitUsage, "builder %q takes its TLS files from its definition; --%s, --%s and --%s are for a tcp:// address", def.Name, tlsCACertFlag, tlsCertFlag, tlsKeyFlag)
	}
	nodes, err := definedNodes(def)
	if err != nil {
		return nil, err
	}
	if err := buildkit.ConnectNodes(cmd.Context(), nodes, func(ctx context.Context, n *buildkit.Node) (*client.Client, error) {
		return buildkit.Connect(ctx, nodeOptions(def, n.Name)...)
	}); err != nil {
		return nil, exitf(ExitFailed, "builder %s: %v", def.Name, err)
	}
	return &builderConn{name: def.Name, nodes: nodes, primary: buildkit.NodeFor(nodes, platforms.DefaultSpec()).Client}, nil
}

// definedNodes are a builder definition's nodes, not yet connected.
func definedNodes(def *recipes.Builder) ([]*buildkit.Node, error) {
	var nodes []*buildkit.Node
	for _, n := range def.Nodes {
		node := &buildkit.Node{Name: n.Name, Address: n.Endpoint}
		for _, s := range n.Platforms {
			p, err := platforms.Parse(s)
			if err != nil {
				return nil, exitf(ExitUsage, "builder %s, node %s: platform %q: %v", def.Name, n.Name, s, err)
			}
			node.Native = append(node.Native, platforms.Normalize(p))
		}
		nodes = append(nodes, node)
	}
	return nodes, nil
}

// nodeOptions are the Connect options of a builder definition's node.
func nodeOptions(def *recipes.Builder, node string) []buildkit.ConnectOption {
	for _, n := range def.Nodes {
		if n.Name != node {
			continue
		}
		opts := []buildkit.ConnectOption{buildkit.WithAddress(n.Endpoint)}
		if t := n.TLS; t != nil {
			opts = append(opts, buildkit.WithTLS(t.CACert, t.Cert, t.Key, t.ServerName))
		}
		return opts
	}
	return nil
}

// connectFromFlags connects to the builder the command line names (--builder, else
// BUILDKIT_HOST, else gpuforge's local daemon, started when it is not running), with TLS from
// --tlscacert, --tlscert and --tlskey when any is set. Flags the command does not have count as
// unset. Its errors are *exitError: ExitUsage for an unusable address or flags, ExitFailed
// when the builder cannot be reached or started. The caller closes the client.
func connectFromFlags(cmd *cobra.Command) (*client.Client, error) {
	def, _, err := namedBuilder(cmd)
	if err != nil {
		return nil, err
	}
	if def != nil {
		if len(def.Nodes) != 1 {
			return nil, exitf(ExitUsage, "builder %s has %d nodes and this command works on one daemon: give --%s one node's address (`gpuforge builder inspect %s` lists them)", def.Name, len(def.Nodes), builderFlag, def.Name)
		}
		c, err := buildkit.Connect(cmd.Context(), nodeOptions(def, def.Nodes[0].Name)...)
		if err != nil {
			return nil, exitf(ExitFailed, "builder %s, node %s: %v", def.Name, def.Nodes[0].Name, err)
		}
		return c, nil
	}
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

// defaultBuilderName is what `builder ls` and `builder inspect` call the builder used when
// --builder names none: BUILDKIT_HOST's daemon, else gpuforge's local buildkitd.
const defaultBuilderName = "default"

// probeTimeout bounds how long ls and inspect wait for one node to answer.
const probeTimeout = 5 * time.Second

// builderRow is one line of `builder ls`: a builder, or one of its nodes.
type builderRow struct {
	name      string
	current   bool // the builder builds use now
	endpoint  string
	status    string
	version   string
	platforms []string // native platforms marked with *, then (for nodes that declare none) the workers'
	nodes     []*builderRow
}

// nodeProbe is what a node says when asked.
type nodeProbe struct {
	info *buildkit.DaemonInfo
	err  error
}

// probe connects to a daemon with opts and asks for its version and workers; it never starts
// gpuforge's local daemon.
func probe(ctx context.Context, opts ...buildkit.ConnectOption) nodeProbe {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	c, err := buildkit.Connect(ctx, append(opts, buildkit.WithConnectTimeout(probeTimeout))...)
	if err != nil {
		return nodeProbe{err: err}
	}
	defer c.Close()
	info, err := buildkit.Info(ctx, c)
	return nodeProbe{info: info, err: err}
}

// probeDefinition probes every node of a builder definition at once.
func probeDefinition(ctx context.Context, def *recipes.Builder) []nodeProbe {
	out := make([]nodeProbe, len(def.Nodes))
	var wg sync.WaitGroup
	for i, n := range def.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = probe(ctx, nodeOptions(def, n.Name)...)
		}()
	}
	wg.Wait()
	return out
}

// probeDefault probes the default builder: BUILDKIT_HOST's daemon, else gpuforge's local one
// when it runs. It returns the endpoint shown for it, and whether it is down without error (the
// local daemon, which the next build starts).
func probeDefault(cmd *cobra.Command) (endpoint string, p nodeProbe, notRunning bool) {
	if addr := os.Getenv(buildkit.BuildkitHostEnv); addr != "" {
		return addr, probe(cmd.Context(), buildkit.WithAddress(addr)), false
	}
	st, err := buildkit.LocalStatus(cmd.Context(), "")
	if err != nil {
		return "gpuforge's local buildkitd", nodeProbe{err: err}, false
	}
	endpoint = st.Address
	if !st.Ready {
		return endpoint, nodeProbe{}, true
	}
	return endpoint, probe(cmd.Context(), buildkit.WithAddress(st.Address)), false
}

// rowStatus fills a row's status, version and (when it declares none) platforms from a probe.
func rowStatus(row *builderRow, p nodeProbe, notRunning bool) {
	switch {
	case notRunning:
		row.status = "not running"
	case p.err != nil:
		row.status = "unreachable"
	default:
		row.status = "running"
		row.version = p.info.Version.Version
		if len(row.platforms) == 0 {
			row.platforms = p.info.Platforms()
		}
	}
}

// nativePlatforms marks a node's declared platforms with *, as buildx ls marks those given
// with --platform.
func nativePlatforms(n *recipes.BuilderNode) []string {
	var out []string
	for _, p := range n.Platforms {
		out = append(out, p+"*")
	}
	return out
}

// builderRows lists the default builder and every builder of the builders file, probing each
// node.
func builderRows(cmd *cobra.Command, builders []*recipes.Builder) []*builderRow {
	current := flagString(cmd, builderFlag)
	endpoint, p, notRunning := probeDefault(cmd)
	def := &builderRow{name: defaultBuilderName, endpoint: endpoint, current: current == "" || strings.Contains(current, "://")}
	if strings.Contains(current, "://") {
		def.endpoint = current
		p, notRunning = probe(cmd.Context(), buildkit.WithAddress(current)), false
	}
	rowStatus(def, p, notRunning)
	rows := []*builderRow{def}
	probes := make([][]nodeProbe, len(builders))
	var wg sync.WaitGroup
	for i, b := range builders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			probes[i] = probeDefinition(cmd.Context(), b)
		}()
	}
	wg.Wait()
	for i, b := range builders {
		row := &builderRow{name: b.Name, current: b.Name == current}
		up := 0
		for j, n := range b.Nodes {
			nr := &builderRow{name: n.Name, endpoint: n.Endpoint, platforms: nativePlatforms(n)}
			rowStatus(nr, probes[i][j], false)
			if nr.status == "running" {
				up++
			}
			row.nodes = append(row.nodes, nr)
		}
		row.status = fmt.Sprintf("%d/%d nodes up", up, len(b.Nodes))
		rows = append(rows, row)
	}
	return rows
}

// writeBuilderList prints builder rows as `docker buildx ls` does: a builder per line (the one
// builds use marked with *), its nodes indented under it.
func writeBuilderList(w io.Writer, rows []*builderRow, file string) {
	var buf strings.Builder
	tw := tabwriter.NewWriter(&buf, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME/NODE\tENDPOINT\tSTATUS\tBUILDKIT\tPLATFORMS")
	for _, r := range rows {
		name := r.name
		if r.current {
			name += " *"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, r.endpoint, r.status, r.version, strings.Join(r.platforms, ", "))
		for _, n := range r.nodes {
			fmt.Fprintf(tw, " \\_ %s\t%s\t%s\t%s\t%s\n", n.name, n.endpoint, n.status, n.version, strings.Join(n.platforms, ", "))
		}
	}
	tw.Flush()
	for _, line := range strings.SplitAfter(buf.String(), "\n") {
		io.WriteString(w, strings.TrimRight(line, " \n")+strings.Repeat("\n", strings.Count(line, "\n")))
	}
	if file != "" {
		fmt.Fprintf(w, "Builders file: %s\n", file)
	}
}

func newBuilderLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the builders: the default one and those of the builders file, with each node's status and platforms",
		Long: `Lists the default builder (BUILDKIT_HOST's daemon, else gpuforge's local buildkitd, which ls
does not start) and every builder of the builders file ($GPUFORGE_BUILDERS, else
$XDG_CONFIG_HOME/gpuforge/builders.hcl), each node under its builder with its endpoint, whether it
answers, its BuildKit version and the platforms it builds natively (marked *). The builder builds
use now (--builder, else default) is marked * after its name.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			file := recipes.DefaultBuildersFile()
			builders, err := loadBuilders(cmd, file)
			if err != nil {
				return err
			}
			shown := ""
			if _, err := os.Stat(file); err == nil {
				shown = file
			}
			writeBuilderList(cmd.OutOrStdout(), builderRows(cmd, builders), shown)
			return nil
		},
	}
}

func newBuilderInspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect [NAME]",
		Short: "Show a builder's nodes: endpoint, TLS files, health, BuildKit version, native and worker platforms",
		Long: `Shows each node of the builder NAME (default: the one --builder names, else "default"): its
endpoint and TLS files, whether it answers (and the error when it does not), its BuildKit version,
the platforms it builds natively (marked *) and those its workers report, and its workers. Exits 4
when a node does not answer, so CI can check a builder before a build.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := flagString(cmd, builderFlag)
			if len(args) == 1 {
				name = args[0]
			}
			w := cmd.OutOrStdout()
			if name == "" || name == defaultBuilderName || strings.Contains(name, "://") {
				endpoint, p, notRunning := probeDefault(cmd)
				if strings.Contains(name, "://") {
					endpoint, p, notRunning = name, probe(cmd.Context(), buildkit.WithAddress(name)), false
				}
				fmt.Fprintf(w, "Name:      %s\nNodes:     1\n", defaultBuilderName)
				return writeNodeDetails(w, defaultBuilderName, endpoint, nil, nil, p, notRunning)
			}
			file := recipes.DefaultBuildersFile()
			builders, err := loadBuilders(cmd, file)
			if err != nil {
				return err
			}
			def := recipes.FindBuilder(builders, name)
			if def == nil {
				return exitf(ExitUsage, "no builder %q in %s; `gpuforge builder ls` lists the builders", name, file)
			}
			fmt.Fprintf(w, "Name:      %s\nFile:      %s\nNodes:     %d\n", def.Name, file, len(def.Nodes))
			var failed []string
			for i, p := range probeDefinition(cmd.Context(), def) {
				n := def.Nodes[i]
				if err := writeNodeDetails(w, n.Name, n.Endpoint, n.Platforms, n.TLS, p, false); err != nil {
					failed = append(failed, n.Name)
				}
			}
			if len(failed) > 0 {
				return exitf(ExitFailed, "builder %s: node %s does not answer", def.Name, strings.Join(failed, ", "))
			}
			return nil
		},
	}
}

// writeNodeDetails prints one node for builder inspect; it returns the probe's error.
func writeNodeDetails(w io.Writer, name, endpoint string, native []string, t *recipes.BuilderTLS, p nodeProbe, notRunning bool) error {
	fmt.Fprintf(w, "\nNode:      %s\nEndpoint:  %s\n", name, endpoint)
	if t != nil {
		var parts []string
		if t.CACert != "" {
			parts = append(parts, "CA "+t.CACert)
		}
		if t.Cert != "" {
			parts = append(parts, "client certificate "+t.Cert+", key "+t.Key)
		}
		if t.ServerName != "" {
			parts = append(parts, "server name "+t.ServerName)
		}
		fmt.Fprintf(w, "TLS:       %s\n", orDash(strings.Join(parts, "; ")))
	}
	switch {
	case notRunning:
		fmt.Fprintf(w, "Status:    not running; the next build starts it\n")
		return nil
	case p.err != nil:
		fmt.Fprintf(w, "Status:    unreachable: %v\n", p.err)
		return p.err
	}
	fmt.Fprintf(w, "Status:    running\n")
	v := p.info.Version
	fmt.Fprintf(w, "BuildKit:  %s", v.Version)
	if v.Revision != "" {
		fmt.Fprintf(w, " (revision %s)", v.Revision)
	}
	fmt.Fprintln(w)
	var shown []string
	seen := map[string]bool{}
	for _, s := range native {
		shown = append(shown, s+"*")
		seen[s] = true
	}
	for _, s := range p.info.Platforms() {
		if !seen[s] {
			shown = append(shown, s)
		}
	}
	fmt.Fprintf(w, "Platforms: %s\n", strings.Join(shown, ", "))
	for _, wk := range p.info.Workers {
		kind := wk.Labels["org.mobyproject.buildkit.worker.executor"]
		if s := wk.Labels["org.mobyproject.buildkit.worker.snapshotter"]; s != "" {
			kind += ", " + s
		}
		fmt.Fprintf(w, "Worker:    %s (%s)\n", wk.ID, kind)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
