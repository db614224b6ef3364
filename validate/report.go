package validate

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// This file renders Reports for people: WriteMarkdown for a terminal or a CI job summary,
// WriteHTML for a self-contained page with an inline SVG chart. Both are deterministic: the
// same reports give the same bytes (no clock, no map order, no locale).

// Seed figure: the manual recipe gpuforge grew out of ran NVIDIA's TensorFlow 17.12 container's
// ResNet-50 benchmark (-b 64 -g 4) at about 820 img/s on 4×P100, i.e. 205 img/s per GPU. The
// HTML chart shows it as a comparison bar. It is not like for like (framework, precision and
// batch size differ); the page says so.
const (
	seedTotal     = 820.0
	seedGPUs      = 4
	seedPerGPU    = seedTotal / seedGPUs
	seedGPUModel  = "P100"
	seedFramework = "TensorFlow 17.12"
	seedBatch     = 64
)

// verdictOf is the report's verdict, derived from its checks when it was never decided. The
// report is not modified.
func verdictOf(r *Report) Verdict {
	if r.Verdict != "" {
		return r.Verdict
	}
	c := *r
	return c.Decide()
}

func checkReports(reports []*Report) error {
	for i, r := range reports {
		if r == nil {
			return fmt.Errorf("validate: report %d is nil", i)
		}
	}
	return nil
}

// sortedChecks returns the checks with failures and errors first, then passes, then skips,
// each group in the order the checks ran.
func sortedChecks(checks []CheckResult) []CheckResult {
	rank := func(s Status) int {
		switch s {
		case StatusFail, StatusError:
			return 0
		case StatusPass:
			return 1
		case StatusSkip:
			return 2
		}
		return 3
	}
	out := append([]CheckResult(nil), checks...)
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i].Status) < rank(out[j].Status) })
	return out
}

// statusMark is the symbol a person sees for a check status.
func statusMark(s Status) string {
	switch s {
	case StatusPass:
		return "✅"
	case StatusFail:
		return "❌"
	case StatusError:
		return "⛔"
	case StatusSkip:
		return "➖"
	}
	return "?"
}

// htmlMark is the symbol the HTML page shows for a check status: plain symbols every text
// font has, not emoji, so the page reads the same without an emoji font.
func htmlMark(s Status) string {
	switch s {
	case StatusPass:
		return "✓"
	case StatusFail:
		return "✗"
	case StatusError:
		return "!"
	case StatusSkip:
		return "–"
	}
	return "?"
}

func verdictMark(v Verdict) string {
	if v == VerdictPass {
		return "✅"
	}
	return "❌"
}

// gpuSummary is "8 × NVIDIA H200, driver 580.159.04, CUDA 13.0": GPUs counted by model in
// the order first seen, with the distinct driver and CUDA versions.
func gpuSummary(gpus []GPU) string {
	if len(gpus) == 0 {
		return "no GPUs"
	}
	var models []string
	count := map[string]int{}
	for _, g := range gpus {
		name := g.Name
		if name == "" {
			name = "unknown GPU"
		}
		if count[name] == 0 {
			models = append(models, name)
		}
		count[name]++
	}
	parts := make([]string, len(models))
	for i, m := range models {
		parts[i] = fmt.Sprintf("%d × %s", count[m], m)
	}
	s := strings.Join(parts, " + ")
	if d := distinctGPUField(gpus, func(g GPU) string { return g.DriverVersion }); d != "" {
		s += ", driver " + d
	}
	if c := distinctGPUField(gpus, func(g GPU) string { return g.CUDAVersion }); c != "" {
		s += ", CUDA " + c
	}
	return s
}

func distinctGPUField(gpus []GPU, f func(GPU) string) string {
	var vals []string
	seen := map[string]bool{}
	for _, g := range gpus {
		if v := f(g); v != "" && !seen[v] {
			seen[v] = true
			vals = append(vals, v)
		}
	}
	return strings.Join(vals, "/")
}

// formatRate formats images per second: thousands separated, whole numbers from 100 up, one
// decimal below.
func formatRate(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	if math.Abs(v) < 100 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return groupThousands(int64(math.Round(v)))
}

func groupThousands(n int64) string {
	neg := n < 0
	if neg {
		n = -n
	}
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// formatPercent formats a fraction as a percentage with one decimal ("96.8 %"), or none when
// it is whole ("80 %").
func formatPercent(f float64) string {
	p := f * 100
	if math.Abs(p-math.Round(p)) < 0.05 {
		return strconv.FormatFloat(math.Round(p), 'f', 0, 64) + " %"
	}
	return strconv.FormatFloat(p, 'f', 1, 64) + " %"
}

func formatDuration(r *Report) string {
	if r.Started.IsZero() || r.Finished.IsZero() || r.Finished.Before(r.Started) {
		return ""
	}
	return r.Finished.Sub(r.Started).Round(time.Second).String()
}

// perGPU is the ResNet-50 throughput of each GPU by rank. A result without per-GPU figures
// gives the total spread over its GPUs, as one value.
func perGPU(rn *ResNet50Result) []float64 {
	if len(rn.PerGPU) > 0 {
		return rn.PerGPU
	}
	if rn.GPUs > 0 && rn.ImagesPerSec > 0 {
		return []float64{rn.ImagesPerSec / float64(rn.GPUs)}
	}
	return nil
}

func meanRate(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// gpuLabel names the GPU of a rank: the inventory's GPU at that position when the inventory
// and the ranks line up, else the rank.
func gpuLabel(r *Report, rank int) string {
	if rn := r.ResNet50; rn != nil && len(rn.PerGPU) == len(r.GPUs) && rank < len(r.GPUs) {
		return "GPU " + strconv.Itoa(r.GPUs[rank].Index)
	}
	if rn := r.ResNet50; rn != nil && len(rn.PerGPU) == 0 {
		return "mean per GPU"
	}
	return "rank " + strconv.Itoa(rank)
}

func resnetConfig(rn *ResNet50Result) string {
	var parts []string
	if rn.Precision != "" {
		parts = append(parts, rn.Precision)
	}
	if rn.BatchSize > 0 {
		parts = append(parts, fmt.Sprintf("batch %d per GPU", rn.BatchSize))
	}
	if rn.GPUs > 0 {
		parts = append(parts, countNoun(rn.GPUs, "GPU", "GPUs"))
	}
	return strings.Join(parts, ", ")
}

func countNoun(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// resnetLine is the one-line ResNet-50 summary shared by the Markdown and the HTML page.
func resnetLine(rn *ResNet50Result) string {
	var b strings.Builder
	b.WriteString("ResNet-50")
	if c := resnetConfig(rn); c != "" {
		b.WriteString(" (" + c + ")")
	}
	b.WriteString(": " + formatRate(rn.ImagesPerSec) + " img/s total")
	per := perGPU(rn)
	if len(per) > 0 {
		m := meanRate(per)
		b.WriteString(" · " + formatRate(m) + " img/s per GPU")
		if len(per) > 1 {
			lo, hi := rateRange(per)
			b.WriteString(" (" + formatRate(lo) + "–" + formatRate(hi) + ")")
		}
		if rn.Reference > 0 {
			b.WriteString(" · reference " + formatRate(rn.Reference) + " img/s per GPU")
			if rn.Model != "" {
				b.WriteString(" for " + rn.Model)
			}
			b.WriteString(" · " + formatPercent(m/rn.Reference) + " of reference")
			if rn.Threshold > 0 {
				b.WriteString(" · threshold " + formatPercent(rn.Threshold) + " (" + formatRate(rn.Threshold*rn.Reference) + " img/s per GPU)")
			}
		} else {
			b.WriteString(" · no reference")
			if rn.Model != "" {
				b.WriteString(" for " + rn.Model)
			}
		}
	}
	return b.String()
}

func rateRange(v []float64) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range v {
		lo = math.Min(lo, x)
		hi = math.Max(hi, x)
	}
	return lo, hi
}

// ---------------------------------------------------------------------------------------
// Markdown

// WriteMarkdown writes a summary of the reports for a terminal or a Markdown viewer: one line
// per validation with its verdict, target and GPUs, then for each validation a table of its
// checks (failed ones first, with their messages) and the ResNet-50 figures.
func WriteMarkdown(w io.Writer, reports []*Report) error {
	if err := checkReports(reports); err != nil {
		return err
	}
	var b bytes.Buffer
	if len(reports) == 0 {
		b.WriteString("No validations ran.\n")
		_, err := w.Write(b.Bytes())
		return err
	}
	failed := 0
	for _, r := range reports {
		if verdictOf(r) != VerdictPass {
			failed++
		}
	}
	fmt.Fprintf(&b, "## GPU validation: %s\n\n", overall(len(reports), failed))
	for _, r := range reports {
		fmt.Fprintf(&b, "- %s\n", mdSummaryLine(r))
	}
	for _, r := range reports {
		b.WriteString("\n")
		mdReport(&b, r)
	}
	_, err := w.Write(b.Bytes())
	return err
}

func overall(n, failed int) string {
	switch {
	case failed == 0 && n == 1:
		return "passed"
	case failed == 0:
		return fmt.Sprintf("all %d passed", n)
	case n == 1:
		return "failed"
	}
	return fmt.Sprintf("%d of %d failed", failed, n)
}

func mdSummaryLine(r *Report) string {
	v := verdictOf(r)
	parts := []string{
		verdictMark(v) + " **" + strings.ToUpper(string(v)) + "** " + mdCode(r.Validation) + " → " + mdCode(r.Target),
		mdText(gpuSummary(r.GPUs)),
	}
	if n := len(r.Failed()); n > 0 {
		parts = append(parts, countNoun(n, "check failed", "checks failed"))
	}
	return strings.Join(parts, " · ")
}

func mdReport(b *bytes.Buffer, r *Report) {
	v := verdictOf(r)
	fmt.Fprintf(b, "### %s %s → %s\n\n", verdictMark(v), mdCode(r.Validation), mdCode(r.Target))
	var facts []string
	if r.Host != "" {
		facts = append(facts, "host "+mdCode(r.Host))
	}
	if r.Image != "" {
		facts = append(facts, "image "+mdCode(r.Image))
	}
	if r.Selection != "" {
		facts = append(facts, "GPUs "+mdCode(r.Selection))
	}
	if !r.Started.IsZero() {
		facts = append(facts, "started "+r.Started.UTC().Format("2006-01-02 15:04:05Z"))
	}
	if d := formatDuration(r); d != "" {
		facts = append(facts, "took "+d)
	}
	if len(facts) > 0 {
		b.WriteString(strings.Join(facts, " · ") + "\n\n")
	}
	if len(r.Checks) == 0 {
		b.WriteString("No checks ran.\n")
	} else {
		rows := [][]string{{"", "check", "GPU", "message"}}
		for _, c := range sortedChecks(r.Checks) {
			gpu := "–"
			if c.GPU >= 0 {
				gpu = strconv.Itoa(c.GPU)
			}
			msg := c.Message
			if msg == "" && (c.Observed != "" || c.Expected != "") {
				msg = "observed " + orDash(c.Observed) + ", expected " + orDash(c.Expected)
			}
			rows = append(rows, []string{statusMark(c.Status) + " " + string(c.Status), mdCell(c.Name), gpu, mdCell(msg)})
		}
		writeTable(b, rows)
	}
	if rn := r.ResNet50; rn != nil {
		rest := strings.TrimPrefix(resnetLine(rn), "ResNet-50")
		sep := ""
		if strings.HasPrefix(rest, " ") {
			sep = " "
		}
		b.WriteString("\n**ResNet-50**" + sep + mdText(rest) + "\n")
	}
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// writeTable writes a Markdown table with its columns padded, so that it also reads as a
// table in a terminal.
func writeTable(b *bytes.Buffer, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], displayWidth(cell), 3)
		}
	}
	line := func(row []string) {
		b.WriteString("|")
		for i, cell := range row {
			b.WriteString(" " + cell + strings.Repeat(" ", widths[i]-displayWidth(cell)) + " |")
		}
		b.WriteString("\n")
	}
	line(rows[0])
	b.WriteString("|")
	for _, w := range widths {
		b.WriteString(strings.Repeat("-", w+2) + "|")
	}
	b.WriteString("\n")
	for _, row := range rows[1:] {
		line(row)
	}
}

// displayWidth is the number of terminal columns s takes: the status emoji take two.
func displayWidth(s string) int {
	n := 0
	for _, r := range s {
		switch {
		case r == '✅' || r == '❌' || r == '⛔' || r == '➖':
			n += 2
		case r >= 0x1100 && isWide(r):
			n += 2
		default:
			n++
		}
	}
	return n
}

// isWide reports East Asian wide and emoji presentation runes, roughly.
func isWide(r rune) bool {
	return (r >= 0x1100 && r <= 0x115F) || (r >= 0x2E80 && r <= 0xA4CF) || (r >= 0xAC00 && r <= 0xD7A3) ||
		(r >= 0xF900 && r <= 0xFAFF) || (r >= 0xFE30 && r <= 0xFE4F) || (r >= 0xFF00 && r <= 0xFF60) ||
		(r >= 0xFFE0 && r <= 0xFFE6) || (r >= 0x1F300 && r <= 0x1FAFF)
}

// mdText makes text safe in a Markdown line: no line breaks, and no characters that start
// Markdown or HTML markup by accident.
func mdText(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\\', '`', '*', '_', '[', ']', '<', '>', '|':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// mdCell is text in a table cell; only what breaks the table is escaped, so that messages
// read as written in a terminal.
func mdCell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "<", `\<`)
	return s
}

// mdCode writes s as a code span, with a fence longer than any run of backticks in it.
func mdCode(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "–"
	}
	longest, run := 0, 0
	for _, r := range s {
		if r == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	fence := strings.Repeat("`", longest+1)
	if longest > 0 {
		return fence + " " + s + " " + fence
	}
	return fence + s + fence
}

// ---------------------------------------------------------------------------------------
// HTML

//go:embed report.html.tmpl
var reportTemplateText string

var reportTemplate = template.Must(template.New("report").Parse(reportTemplateText))

// WriteHTML writes a self-contained HTML page (inline CSS and SVG, no scripts, nothing
// fetched) for the reports: an overall verdict banner, then per validation its verdict, the
// checks (failed first), the GPU inventory and a bar chart of ResNet-50 images per second per
// GPU against the model's reference, next to the 4×P100 figure of the recipe gpuforge grew
// out of.
func WriteHTML(w io.Writer, reports []*Report) error {
	if err := checkReports(reports); err != nil {
		return err
	}
	page := pageView{Count: len(reports)}
	for i, r := range reports {
		rv := buildReportView(r, i)
		if !rv.Pass {
			page.Failed++
		}
		page.Reports = append(page.Reports, rv)
	}
	page.Pass = page.Failed == 0 && page.Count > 0
	page.Schema = ReportSchemaVersion
	switch {
	case page.Count == 0:
		page.Class, page.Mark = "none", "–"
	case page.Pass:
		page.Class, page.Mark = "pass", "✓ PASS"
	default:
		page.Class, page.Mark = "fail", "✗ FAIL"
	}
	switch {
	case page.Count == 0:
		page.Title = "No validations ran"
	case page.Count == 1:
		r := reports[0]
		page.Title = fmt.Sprintf("%s %s → %s", strings.ToUpper(string(verdictOf(r))), r.Validation, r.Target)
	default:
		page.Title = "GPU validation: " + overall(page.Count, page.Failed)
	}
	switch {
	case page.Count == 0:
		page.Headline = "No validations ran"
	case page.Count == 1:
		page.Headline = "GPU validation " + overall(page.Count, page.Failed)
	case page.Failed == 0:
		page.Headline = fmt.Sprintf("All %d GPU validations passed", page.Count)
	default:
		page.Headline = fmt.Sprintf("%d of %d GPU validations failed", page.Failed, page.Count)
	}
	var b bytes.Buffer
	if err := reportTemplate.Execute(&b, page); err != nil {
		return fmt.Errorf("validate: render HTML report: %w", err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

type pageView struct {
	Class    string // pass, fail or none
	Mark     string
	Schema   int
	Title    string
	Headline string
	Pass     bool
	Count    int
	Failed   int
	Reports  []reportView
}

type reportView struct {
	ID        string
	Pass      bool
	R         *Report
	GPUs      string
	Failed    int
	Started   string
	Duration  string
	Env       string
	Checks    []checkView
	Failures  []checkView
	Inventory []gpuView
	ResNet    *resnetView
}

type checkView struct {
	Mark, Status, Name, GPU, Message, Observed, Expected string
	Bad                                                  bool
}

type gpuView struct {
	Index                                 int
	Name, Memory, UUID, PCI, Driver, CUDA string
}

type resnetView struct {
	Several   bool   // more than one GPU ran
	Lowest    string // the slowest of several GPUs: "73.6 %" of the reference, or img/s without one
	LowestGPU string
	LowJudged string
	Judged    string // "good" or "bad" when the mean per GPU is judged against a pass line
	Source    string
	Total     string
	PerGPU    string
	Range     string
	Reference string
	Percent   string
	Threshold string
	Config    []configItem
	Chart     chartView
}

type configItem struct{ K, V string }

func buildReportView(r *Report, i int) reportView {
	v := verdictOf(r)
	rv := reportView{
		ID:     fmt.Sprintf("v%d", i+1),
		Pass:   v == VerdictPass,
		R:      r,
		GPUs:   gpuSummary(r.GPUs),
		Failed: len(r.Failed()),
		Env:    strings.Join(r.Env, ", "),
	}
	if !r.Started.IsZero() {
		rv.Started = r.Started.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	rv.Duration = formatDuration(r)
	for _, c := range sortedChecks(r.Checks) {
		gpu := "–"
		if c.GPU >= 0 {
			gpu = strconv.Itoa(c.GPU)
		}
		cv := checkView{
			Mark: htmlMark(c.Status), Status: string(c.Status), Name: c.Name, GPU: gpu,
			Message: c.Message, Observed: c.Observed, Expected: c.Expected,
			Bad: c.Status == StatusFail || c.Status == StatusError,
		}
		rv.Checks = append(rv.Checks, cv)
		if cv.Bad {
			rv.Failures = append(rv.Failures, cv)
		}
	}
	for _, g := range r.GPUs {
		gv := gpuView{Index: g.Index, Name: g.Name, UUID: g.UUID, PCI: g.PCIBusID, Driver: g.DriverVersion, CUDA: g.CUDAVersion}
		if g.MemoryMiB > 0 {
			gv.Memory = strconv.FormatFloat(float64(g.MemoryMiB)/1024, 'f', 1, 64) + " GiB"
		}
		rv.Inventory = append(rv.Inventory, gv)
	}
	if rn := r.ResNet50; rn != nil {
		rv.ResNet = buildResNetView(r, rn, rv.ID)
	}
	return rv
}

func buildResNetView(r *Report, rn *ResNet50Result, id string) *resnetView {
	v := &resnetView{Total: formatRate(rn.ImagesPerSec)}
	per := perGPU(rn)
	if len(per) > 0 {
		m := meanRate(per)
		v.PerGPU = formatRate(m)
		if len(per) > 1 {
			lo, hi := rateRange(per)
			v.Range = formatRate(lo) + "–" + formatRate(hi)
		}
		lo, low := math.Inf(1), 0
		for i, x := range per {
			if x < lo {
				lo, low = x, i
			}
		}
		if rn.Reference > 0 {
			v.Percent = formatPercent(m / rn.Reference)
			if rn.Threshold > 0 {
				v.Judged, v.LowJudged = "good", "good"
				if m < rn.Threshold*rn.Reference {
					v.Judged = "bad"
				}
				if lo < rn.Threshold*rn.Reference {
					v.LowJudged = "bad"
				}
			}
		}
		v.Several = len(per) > 1
		if len(per) > 1 {
			v.LowestGPU = gpuLabel(r, low)
			v.Lowest = formatRate(lo)
			if rn.Reference > 0 {
				v.Lowest = formatPercent(lo / rn.Reference)
			}
		}
	}
	if rn.Reference > 0 {
		v.Reference = formatRate(rn.Reference)
		if rn.Threshold > 0 {
			v.Threshold = formatPercent(rn.Threshold) + " = " + formatRate(rn.Threshold*rn.Reference)
		}
	}
	add := func(k, val string) {
		if val != "" {
			v.Config = append(v.Config, configItem{k, val})
		}
	}
	add("GPU model", rn.Model)
	add("precision", rn.Precision)
	if rn.BatchSize > 0 {
		add("batch per GPU", strconv.Itoa(rn.BatchSize))
	}
	add("channels_last", yesNo(rn.ChannelsLast))
	add("torch.compile", yesNo(rn.Compile))
	if rn.Warmup > 0 || rn.Iterations > 0 {
		add("iterations", fmt.Sprintf("%d after %d warm-up", rn.Iterations, rn.Warmup))
	}
	if rn.Seconds > 0 {
		add("timed", strconv.FormatFloat(rn.Seconds, 'f', 1, 64)+" s")
	}
	add("PyTorch", rn.Torch)
	add("CUDA", rn.CUDA)
	v.Source = rn.ReferenceSource
	v.Chart = buildChart(r, rn, id)
	return v
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// ---------------------------------------------------------------------------------------
// The chart, computed by hand: horizontal bars, one per GPU, then the seed's bar below a
// divider, on one linear axis from zero. The reference and the pass line are vertical lines
// across the GPU rows only (the reference is for the GPUs' model, not the P100), each
// labelled at its top end in the margin above the plot. All coordinates are SVG user units
// of the viewBox, printed with one decimal, so the output is stable.

const (
	chartWidth = 900.0
	chartLeft  = 130.0 // row labels end 10 units left of the axis
	chartRight = 24.0
	plotWidth  = chartWidth - chartLeft - chartRight
	rowHeight  = 32.0
	barHeight  = 20.0
	seedGap    = 20.0
	axisSpace  = 50.0 // tick labels and the axis title
	charWidth  = 6.8  // estimated advance of a 12px sans-serif character, bold digits included
	labelPad   = 8.0

	// Baselines of the labels of the reference and the pass line, in the margin above the
	// plot, and the plot's top with both lines, one, or none.
	refLabelY  = 16.0
	passLabelY = 34.0
	topLines2  = 44.0
	topLines1  = 26.0
	topLines0  = 10.0
	ticksWant  = 7
)

type chartView struct {
	ID      string
	Width   string
	Height  string
	Title   string
	Desc    string
	PlotX   string
	LabelX  string
	PlotX2  string
	PlotTop string
	AxisY   string
	TickY   string
	TitleX  string
	TitleY  string
	Axis    string
	Ticks   []chartTick
	Bars    []chartBar
	Seed    chartBar
	Divider string
	Ref     *chartLine
	Pass    *chartLine
	Note    string
}

type chartTick struct{ X, Label string }

type chartBar struct {
	Class       string
	Y           string
	X           string
	W           string
	H           string
	LabelY      string
	Label       string
	Sublabel    string
	SublabelY   string
	Value       string
	ValueX      string
	ValueY      string
	ValueAnchor string
	ValueClass  string
	Tooltip     string
}

type chartLine struct {
	Class  string
	X      string
	Y1, Y2 string
	Label  string
	LabelX string
	LabelY string
	Anchor string
}

func svgNum(v float64) string {
	if math.Abs(v) < 0.05 {
		v = 0
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// niceStep is a tick step of 1, 2, 2.5 or 5 times a power of ten that divides maxV into
// about n steps, rounding the step up.
func niceStep(maxV float64, n int) float64 {
	if maxV <= 0 || math.IsNaN(maxV) || math.IsInf(maxV, 0) {
		return 1
	}
	raw := maxV / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5} {
		if raw <= m*mag*(1+1e-9) {
			return m * mag
		}
	}
	return 10 * mag
}

// formatTick formats an axis tick: whole numbers with thousands separators, and as many
// decimals as a fractional step needs.
func formatTick(t, step float64) string {
	if step >= 1 && t == math.Trunc(t) {
		return groupThousands(int64(t))
	}
	d := max(0, int(math.Ceil(-math.Log10(step)+1e-9)))
	if step*math.Pow(10, float64(d)) != math.Trunc(step*math.Pow(10, float64(d))) {
		d++
	}
	return strconv.FormatFloat(t, 'f', d, 64)
}

func textWidth(s string) float64 { return float64(utf8.RuneCountInString(s)) * charWidth }

func isFinite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func buildChart(r *Report, rn *ResNet50Result, id string) chartView {
	per := perGPU(rn)
	ref := rn.Reference
	if !isFinite(ref) || ref < 0 {
		ref = 0
	}
	var pass float64
	if ref > 0 && rn.Threshold > 0 && isFinite(rn.Threshold) {
		pass = ref * rn.Threshold
	}

	// The axis runs from zero to the first tick at or above the largest value plus a little.
	top := seedPerGPU
	for _, x := range per {
		if isFinite(x) {
			top = math.Max(top, x)
		}
	}
	top = math.Max(top, ref)
	step := niceStep(top*1.04, ticksWant)
	axisMax := math.Ceil(top*1.04/step) * step
	scale := func(x float64) float64 {
		if !isFinite(x) || x < 0 {
			x = 0
		}
		return chartLeft + math.Min(x, axisMax)/axisMax*plotWidth
	}

	n := len(per)
	chartTop := topLines0
	var lines []float64 // x of the lines across the GPU rows, which labels must not cross
	if ref > 0 && n > 0 {
		chartTop = topLines1
		lines = append(lines, scale(ref))
		if pass > 0 {
			chartTop = topLines2
			lines = append(lines, scale(pass))
		}
	}
	gpuRowsEnd := chartTop + float64(n)*rowHeight
	seedY := gpuRowsEnd + seedGap
	axisY := seedY + rowHeight
	height := axisY + axisSpace

	c := chartView{
		ID:      id,
		Width:   svgNum(chartWidth),
		Height:  svgNum(height),
		PlotX:   svgNum(chartLeft),
		LabelX:  svgNum(chartLeft - 10),
		PlotX2:  svgNum(chartLeft + plotWidth),
		PlotTop: svgNum(chartTop - 4),
		AxisY:   svgNum(axisY),
		TickY:   svgNum(axisY + 17),
		TitleX:  svgNum(chartLeft + plotWidth/2),
		TitleY:  svgNum(axisY + 40),
		Divider: svgNum(gpuRowsEnd + seedGap/2),
	}
	c.Axis = "images per second per GPU"
	if cfg := resnetConfig(rn); cfg != "" {
		c.Axis += " · ResNet-50 training, " + cfg
	}
	for i := 0; float64(i)*step <= axisMax*(1+1e-9); i++ {
		t := float64(i) * step
		c.Ticks = append(c.Ticks, chartTick{X: svgNum(scale(t)), Label: formatTick(t, step)})
	}

	model := rn.Model
	if model == "" {
		model = "this GPU"
	}
	for i, x := range per {
		y := chartTop + float64(i)*rowHeight + (rowHeight-barHeight)/2
		class := "bar gpu"
		switch {
		case pass > 0 && x < pass:
			class += " below"
		case ref > 0:
			class += " ok"
		}
		value := formatRate(x) + " img/s"
		if ref > 0 {
			value += " · " + formatPercent(x/ref) + " of reference"
		}
		b := chartBar{
			Class:   class,
			Y:       svgNum(y),
			H:       svgNum(barHeight),
			LabelY:  svgNum(y + barHeight/2 + 4),
			Label:   gpuLabel(r, i),
			Value:   value,
			Tooltip: fmt.Sprintf("%s: %s img/s", gpuLabel(r, i), formatRate(x)),
		}
		if len(rn.PerGPU) == len(r.GPUs) && r.GPUs[i].UUID != "" {
			b.Tooltip += " (" + r.GPUs[i].UUID + ")"
		}
		placeBar(&b, y, scale(x), lines)
		c.Bars = append(c.Bars, b)
	}

	sy := seedY + (rowHeight-barHeight)/2
	c.Seed = chartBar{
		Class:     "bar seed",
		Y:         svgNum(sy),
		H:         svgNum(barHeight),
		LabelY:    svgNum(sy + barHeight/2 - 1),
		Label:     fmt.Sprintf("%d×%s, 2017", seedGPUs, seedGPUModel),
		Sublabel:  fmt.Sprintf("TF %s, batch %d", strings.TrimPrefix(seedFramework, "TensorFlow "), seedBatch),
		SublabelY: svgNum(sy + barHeight/2 + 11),
		Value:     fmt.Sprintf("%s img/s per GPU (%s img/s on %d×%s)", formatRate(seedPerGPU), formatRate(seedTotal), seedGPUs, seedGPUModel),
		Tooltip: fmt.Sprintf("The recipe gpuforge grew out of: NVIDIA's %s container, ResNet-50 benchmark with -b %d -g %d, about %s img/s on %d×%s",
			seedFramework, seedBatch, seedGPUs, formatRate(seedTotal), seedGPUs, seedGPUModel),
	}
	placeBar(&c.Seed, sy, scale(seedPerGPU), nil)

	if ref > 0 && n > 0 {
		bottom := gpuRowsEnd + 2
		c.Ref = vline("ref", lines[0], refLabelY-10, bottom, refLabelY,
			fmt.Sprintf("%s reference %s img/s", model, formatRate(ref)))
		if pass > 0 {
			c.Pass = vline("pass", lines[1], passLabelY-10, bottom, passLabelY,
				fmt.Sprintf("pass line %s = %s img/s", formatPercent(rn.Threshold), formatRate(pass)))
		}
	}

	c.Title = "ResNet-50 training throughput per GPU, " + r.Validation
	var desc []string
	for i, x := range per {
		desc = append(desc, fmt.Sprintf("%s %s img/s", gpuLabel(r, i), formatRate(x)))
	}
	if ref > 0 {
		desc = append(desc, fmt.Sprintf("%s reference %s img/s per GPU", model, formatRate(ref)))
	} else {
		desc = append(desc, "no reference for "+model)
	}
	desc = append(desc, fmt.Sprintf("%d×%s with %s: %s img/s per GPU", seedGPUs, seedGPUModel, seedFramework, formatRate(seedPerGPU)))
	c.Desc = strings.Join(desc, "; ") + "."

	var note []string
	if m := meanRate(per); len(per) > 0 && m > 0 {
		note = append(note, fmt.Sprintf("Each GPU here trains %s× as many images per second as one P100 did in the 2017 recipe gpuforge grew out of (NVIDIA's %s container, -b %d -g %d: %s img/s on %d GPUs). Not like for like: framework, precision and batch size differ.",
			strconv.FormatFloat(m/seedPerGPU, 'f', 1, 64), seedFramework, seedBatch, seedGPUs, formatRate(seedTotal), seedGPUs))
	}
	if ref <= 0 {
		s := "There is no reference figure for " + model
		if rn.Precision != "" {
			s += " at " + rn.Precision
		}
		note = append(note, s+", so the bars are not judged against one.")
	}
	c.Note = strings.Join(note, " ")
	return c
}

// placeBar sets the bar's extent from the axis to end and places its value where it crosses
// none of the lines at xs: inside the bar at its start (clear of the reference lines, which
// are usually near the bar's end), inside at its end, or after the bar, in that order of
// preference; after the bar when the value does not fit inside.
func placeBar(b *chartBar, y, end float64, xs []float64) {
	b.X = svgNum(chartLeft)
	w := end - chartLeft
	if w > 0 && w < 1 {
		w = 1
	}
	b.W = svgNum(w)
	b.ValueY = svgNum(y + barHeight/2 + 4)
	tw := textWidth(b.Value)
	clear := func(from, to float64) bool {
		for _, x := range xs {
			if x >= from-3 && x <= to+3 {
				return false
			}
		}
		return true
	}
	fits := tw+2*labelPad <= w
	switch {
	case fits && clear(chartLeft+labelPad, chartLeft+labelPad+tw):
		b.ValueX, b.ValueAnchor, b.ValueClass = svgNum(chartLeft+labelPad), "start", "value inside"
	case fits && clear(end-labelPad-tw, end-labelPad):
		b.ValueX, b.ValueAnchor, b.ValueClass = svgNum(end-labelPad), "end", "value inside"
	case end+labelPad+tw <= chartWidth && clear(end+labelPad, end+labelPad+tw) || !fits:
		b.ValueX, b.ValueAnchor, b.ValueClass = svgNum(end+labelPad), "start", "value"
	default:
		b.ValueX, b.ValueAnchor, b.ValueClass = svgNum(chartLeft+labelPad), "start", "value inside"
	}
}

// vline is a vertical line from y1 to y2 with its label at labelY, ending just left of the
// line, or starting just right of it when there is no room on the left.
func vline(class string, x, y1, y2, labelY float64, label string) *chartLine {
	l := &chartLine{Class: class, X: svgNum(x), Y1: svgNum(y1), Y2: svgNum(y2), Label: label, LabelY: svgNum(labelY)}
	if x-6-textWidth(label) >= 0 {
		l.LabelX, l.Anchor = svgNum(x-6), "end"
	} else {
		l.LabelX, l.Anchor = svgNum(x+6), "start"
	}
	return l
}
