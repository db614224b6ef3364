package validate

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/html"
)

// Recorded reports under testdata/report/, in the order a run would list them.
var reportInputs = []string{"image-1xh200", "image-2xh200", "host-8xh200-fail"}

func loadReport(t *testing.T, name string) *Report {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "report", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &r
}

func reportGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("missing golden file (run go test ./validate/ -run Report -update): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

func renderReports(t *testing.T, f func(io.Writer, []*Report) error, reports ...*Report) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := f(&b, reports); err != nil {
		t.Fatal(err)
	}
	// Twice: the output must not depend on anything but the reports.
	var again bytes.Buffer
	if err := f(&again, reports); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), again.Bytes()) {
		t.Fatal("two renderings of the same reports differ")
	}
	return b.Bytes()
}

func TestReportGolden(t *testing.T) {
	var all []*Report
	for _, name := range reportInputs {
		t.Run(name, func(t *testing.T) {
			r := loadReport(t, name)
			verdict := r.Verdict
			if r.Decide() != verdict {
				t.Fatalf("recorded verdict %q disagrees with the checks", verdict)
			}
			reportGolden(t, filepath.Join("testdata", "report", name+".md"), renderReports(t, WriteMarkdown, r))
			reportGolden(t, filepath.Join("testdata", "report", name+".html"), renderReports(t, WriteHTML, r))
			all = append(all, r)
		})
	}
	if len(all) == len(reportInputs) {
		reportGolden(t, filepath.Join("testdata", "report", "all.md"), renderReports(t, WriteMarkdown, all...))
	}
}

func TestReportMarkdownBasics(t *testing.T) {
	r := loadReport(t, "host-8xh200-fail")
	md := string(renderReports(t, WriteMarkdown, r))
	lines := strings.Split(md, "\n")
	if !strings.HasPrefix(lines[2], "- ❌ **FAIL** `validate.node` → `machine_image.gpu-node` · 8 × NVIDIA H200, driver 580.159.04, CUDA 13.0") {
		t.Errorf("summary line: %q", lines[2])
	}
	// Failed checks come first, in the order they ran.
	var order []string
	for _, l := range lines {
		if strings.HasPrefix(l, "| ") && !strings.HasPrefix(l, "|   ") {
			f := strings.Split(l, "|")
			order = append(order, strings.TrimSpace(f[1])+" "+strings.TrimSpace(f[2]))
		}
	}
	want := []string{"❌ fail ecc", "❌ fail pcie_link", "❌ fail resnet50"}
	if len(order) < 3 || !cmp.Equal(order[:3], want) {
		t.Errorf("first rows = %q, want %q", order, want)
	}
	if !strings.Contains(md, "**ResNet-50** (bf16, batch 256 per GPU, 8 GPUs): 22,260 img/s total · 2,783 img/s per GPU (2,208–2,873) · reference 3,000 img/s per GPU for H200 · 92.8 % of reference · threshold 80 % (2,400 img/s per GPU)") {
		t.Errorf("ResNet-50 line missing or wrong:\n%s", md)
	}
}

func TestReportMarkdownEscapes(t *testing.T) {
	r := &Report{
		Validation: "validate.x", Target: "image.a|b",
		Checks: []CheckResult{
			{Name: "odd", Status: StatusFail, GPU: -1, Message: "a | b\nc <b>bold</b>", Observed: "x", Expected: "y"},
			{Name: "fine", Status: StatusPass, GPU: 0, Message: "ok"},
			{Name: "terse", Status: StatusFail, GPU: 1, Observed: "x", Expected: "y"},
		},
	}
	md := string(renderReports(t, WriteMarkdown, r))
	var table []string
	for _, l := range strings.Split(md, "\n") {
		if strings.HasPrefix(l, "|") {
			table = append(table, l)
		}
	}
	if len(table) != 5 {
		t.Fatalf("table has %d lines, want 5 (a line break in a message must not split a row):\n%s", len(table), md)
	}
	for _, l := range table {
		if n := strings.Count(l, "|") - strings.Count(l, `\|`); n != 5 {
			t.Errorf("row %q has %d cell separators, want 5", l, n)
		}
	}
	if !strings.Contains(md, `\<b>bold\</b>`) {
		t.Errorf("raw HTML passed through:\n%s", md)
	}
	if !strings.Contains(md, "| observed x, expected y |") {
		t.Errorf("a check without a message should show its observed and expected values:\n%s", md)
	}
}

func TestReportEmptyAndNil(t *testing.T) {
	if got := string(renderReports(t, WriteMarkdown)); got != "No validations ran.\n" {
		t.Errorf("Markdown of no reports = %q", got)
	}
	page := string(renderReports(t, WriteHTML))
	if !strings.Contains(page, "No validations ran") || strings.Contains(page, "FAIL") {
		t.Errorf("HTML of no reports:\n%s", page)
	}
	var b bytes.Buffer
	if err := WriteMarkdown(&b, []*Report{nil}); err == nil {
		t.Error("WriteMarkdown accepted a nil report")
	}
	if err := WriteHTML(&b, []*Report{nil}); err == nil {
		t.Error("WriteHTML accepted a nil report")
	}
	// An undecided report gets its verdict from its checks.
	r := &Report{Validation: "validate.v", Target: "image.i", Checks: []CheckResult{{Name: "x", Status: StatusError, GPU: -1, Message: "no driver"}}}
	if md := string(renderReports(t, WriteMarkdown, r)); !strings.Contains(md, "❌ **FAIL**") {
		t.Errorf("undecided failing report:\n%s", md)
	}
	if r.Verdict != "" {
		t.Error("rendering modified the report")
	}
}

// syntheticReport is an H200 run on n GPUs, the last one slower; ref 0 means no reference.
func syntheticReport(n int, ref float64) *Report {
	r := &Report{
		Validation: "validate.gpu", Target: "image.trainer", Selection: "all",
		Started: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), Finished: time.Date(2026, 11, 28, 12, 3, 0, 0, time.UTC),
	}
	rn := &ResNet50Result{Model: "H200", GPUs: n, BatchSize: 256, Precision: "bf16", Iterations: 100, Warmup: 20, Reference: ref}
	if ref > 0 {
		rn.Threshold = 0.8
	}
	for i := range n {
		r.GPUs = append(r.GPUs, GPU{Index: i, UUID: fmt.Sprintf("GPU-%08d", i), Name: "NVIDIA H200", DriverVersion: "580.159.04", CUDAVersion: "13.0"})
		v := 2900 - 7*float64(i)
		if i == n-1 && n > 1 {
			v = 2100
		}
		rn.PerGPU = append(rn.PerGPU, v)
		rn.ImagesPerSec += v
	}
	r.ResNet50 = rn
	r.Checks = []CheckResult{{Name: "resnet50", Status: StatusPass, GPU: -1, Message: "ok"}}
	r.Decide()
	return r
}

func TestHTMLChart(t *testing.T) {
	cases := map[string]*Report{}
	for _, name := range reportInputs {
		cases[name] = loadReport(t, name)
	}
	for _, n := range []int{1, 2, 8} {
		cases[fmt.Sprintf("synthetic-%d", n)] = syntheticReport(n, 3000)
		cases[fmt.Sprintf("synthetic-%d-noref", n)] = syntheticReport(n, 0)
	}
	slow := syntheticReport(4, 1000) // GPUs far above the reference: the axis must still hold them
	cases["above-reference"] = slow
	total := syntheticReport(1, 3000)
	total.ResNet50.PerGPU, total.ResNet50.GPUs, total.ResNet50.ImagesPerSec = nil, 4, 11000
	cases["total-only"] = total
	for name, r := range cases {
		t.Run(name, func(t *testing.T) {
			page := renderReports(t, WriteHTML, r)
			doc, err := html.Parse(bytes.NewReader(page))
			if err != nil {
				t.Fatal(err)
			}
			svgs := findNodes(doc, func(n *html.Node) bool { return n.Type == html.ElementNode && n.Data == "svg" })
			if len(svgs) != 1 {
				t.Fatalf("%d <svg> elements, want 1", len(svgs))
			}
			svg := svgs[0]
			checkSVG(t, svg, r.ResNet50)

			// The SVG is well-formed XML on its own.
			var sb strings.Builder
			if err := html.Render(&sb, svg); err != nil {
				t.Fatal(err)
			}
			dec := xml.NewDecoder(strings.NewReader(sb.String()))
			for {
				if _, err := dec.Token(); err == io.EOF {
					break
				} else if err != nil {
					t.Fatalf("SVG is not well-formed XML: %v", err)
				}
			}
		})
	}
}

func checkSVG(t *testing.T, svg *html.Node, rn *ResNet50Result) {
	t.Helper()
	vb := strings.Fields(nodeAttr(svg, "viewBox"))
	if len(vb) != 4 {
		t.Fatalf("viewBox %q", nodeAttr(svg, "viewBox"))
	}
	w, h := parseNum(t, vb[2]), parseNum(t, vb[3])

	is := func(tag, class string) func(*html.Node) bool {
		return func(n *html.Node) bool {
			return n.Type == html.ElementNode && n.Data == tag && hasClass(n, class)
		}
	}
	per := perGPU(rn)
	gpuBars := findNodes(svg, is("rect", "gpu"))
	if len(gpuBars) != len(per) {
		t.Errorf("%d GPU bars, want %d", len(gpuBars), len(per))
	}
	if got := len(findNodes(svg, func(n *html.Node) bool { return n.Type == html.ElementNode && n.Data == "rect" })); got != len(per)+1 {
		t.Errorf("%d <rect> elements, want one per GPU and the seed's: %d", got, len(per)+1)
	}
	seed := findNodes(svg, is("rect", "seed"))
	if len(seed) != 1 {
		t.Fatalf("%d seed bars, want 1", len(seed))
	}
	if !strings.Contains(nodeText(svg), "205 img/s per GPU (820 img/s on 4×P100)") {
		t.Error("the seed bar's label is missing")
	}
	refs := findNodes(svg, is("line", "ref"))
	passes := findNodes(svg, is("line", "pass"))
	wantRef, wantPass := 0, 0
	if rn.Reference > 0 {
		wantRef = 1
		if rn.Threshold > 0 {
			wantPass = 1
		}
	}
	if len(refs) != wantRef || len(passes) != wantPass {
		t.Errorf("%d reference and %d pass lines, want %d and %d", len(refs), len(passes), wantRef, wantPass)
	}
	if wantRef == 1 && !strings.Contains(nodeText(svg), "H200 reference "+formatRate(rn.Reference)+" img/s") {
		t.Error("the reference line's label is missing")
	}

	// Every coordinate is a finite number inside the viewBox.
	for _, n := range findNodes(svg, func(n *html.Node) bool { return n.Type == html.ElementNode }) {
		for _, a := range n.Attr {
			var limit float64
			switch a.Key {
			case "x", "x1", "x2":
				limit = w
			case "y", "y1", "y2":
				limit = h
			case "width":
				limit = w
			case "height":
				limit = h
			default:
				continue
			}
			v := parseNum(t, a.Val)
			if v < 0 || v > limit {
				t.Errorf("<%s %s=%q> lies outside the %gx%g viewBox", n.Data, a.Key, a.Val, w, h)
			}
		}
	}

	// Tick labels rise evenly from zero and the last tick covers the largest value.
	ticks := findNodes(svg, is("text", "tick"))
	if len(ticks) < 3 || len(ticks) > 9 {
		t.Fatalf("%d ticks", len(ticks))
	}
	var prev = -1.0
	for _, tk := range ticks {
		v := parseNum(t, strings.ReplaceAll(nodeText(tk), ",", ""))
		if v <= prev {
			t.Errorf("tick labels do not rise: %g after %g", v, prev)
		}
		prev = v
	}
	top := math.Max(seedPerGPU, rn.Reference)
	for _, v := range per {
		top = math.Max(top, v)
	}
	if prev < top {
		t.Errorf("last tick %g is below the largest value %g", prev, top)
	}

	// Bars are proportional to their values on the axis the ticks show, from zero.
	x0 := parseNum(t, nodeAttr(ticks[0], "x"))
	scale := (parseNum(t, nodeAttr(ticks[len(ticks)-1], "x")) - x0) / prev
	if got, want := parseNum(t, nodeAttr(seed[0], "width")), seedPerGPU*scale; math.Abs(got-want) > 0.1 {
		t.Errorf("seed bar is %g wide, want %g", got, want)
	}
	for i, b := range gpuBars {
		if i >= len(per) {
			break
		}
		got := parseNum(t, nodeAttr(b, "width"))
		if want := per[i] * scale; math.Abs(got-want) > 0.1 {
			t.Errorf("bar %d is %g wide, want %g for %g img/s", i, got, want, per[i])
		}
		if x := parseNum(t, nodeAttr(b, "x")); x+got > w {
			t.Errorf("bar %d runs off the chart", i)
		}
	}
	if wantRef == 1 {
		x := parseNum(t, nodeAttr(refs[0], "x1")) - x0
		if want := rn.Reference * scale; math.Abs(x-want) > 0.1 {
			t.Errorf("reference line at %g, want %g", x, want)
		}
	}

}

func TestHTMLSelfContainedAndEscaped(t *testing.T) {
	evil := `<script>alert("x")</script>"><img src=x onerror=alert(1)>`
	r := syntheticReport(2, 3000)
	r.Validation = "validate." + evil
	r.Target = "image." + evil
	r.Host = evil
	r.GPUs[0].Name = evil
	r.ResNet50.ReferenceSource = evil
	r.ResNet50.Model = evil
	r.Env = []string{evil}
	r.Checks = append(r.Checks, CheckResult{Name: evil, Status: StatusFail, GPU: 1, Message: evil, Observed: evil, Expected: evil})
	r.Decide()
	page := renderReports(t, WriteHTML, r)
	if bytes.Contains(page, []byte("<script")) || bytes.Contains(page, []byte("<img")) {
		t.Fatalf("unescaped markup in the page:\n%s", page)
	}
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range findNodes(doc, func(n *html.Node) bool { return n.Type == html.ElementNode }) {
		switch n.Data {
		case "script", "img", "link", "iframe", "object", "embed":
			t.Errorf("page has a <%s> element", n.Data)
		}
		for _, a := range n.Attr {
			if strings.HasPrefix(a.Key, "on") || a.Key == "src" || (a.Key == "href" && !strings.HasPrefix(a.Val, "#")) {
				t.Errorf("<%s %s=%q>", n.Data, a.Key, a.Val)
			}
		}
	}
	if !strings.Contains(nodeText(doc), evil) {
		t.Error("the text itself should survive escaping")
	}
	// Nothing is fetched: the only URL is the SVG namespace.
	s := strings.ReplaceAll(string(page), `xmlns="http://www.w3.org/2000/svg"`, "")
	if strings.Contains(s, "http://") || strings.Contains(s, "https://") || strings.Contains(s, "url(") {
		t.Error("page refers to something outside itself")
	}
	if !strings.Contains(string(page), "<style>") {
		t.Error("no inline CSS")
	}
}

func TestHTMLMultiple(t *testing.T) {
	var rs []*Report
	for _, name := range reportInputs {
		rs = append(rs, loadReport(t, name))
	}
	doc, err := html.Parse(bytes.NewReader(renderReports(t, WriteHTML, rs...)))
	if err != nil {
		t.Fatal(err)
	}
	banner := findNodes(doc, func(n *html.Node) bool { return n.Type == html.ElementNode && hasClass(n, "banner") })
	if len(banner) != 1 || !hasClass(banner[0], "fail") || !strings.Contains(nodeText(banner[0]), "1 of 3 GPU validations failed") {
		t.Fatalf("banner: %q", nodeText(banner[0]))
	}
	if n := len(findNodes(doc, func(n *html.Node) bool { return n.Type == html.ElementNode && n.Data == "svg" })); n != 3 {
		t.Errorf("%d charts, want 3", n)
	}
	ids := map[string]bool{}
	for _, n := range findNodes(doc, func(n *html.Node) bool { return nodeAttr(n, "id") != "" }) {
		if ids[nodeAttr(n, "id")] {
			t.Errorf("duplicate id %q", nodeAttr(n, "id"))
		}
		ids[nodeAttr(n, "id")] = true
	}
}

func TestReportHelpers(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{{0, "0.0"}, {12.345, "12.3"}, {205, "205"}, {2903.6, "2,904"}, {22260.1, "22,260"}, {1234567, "1,234,567"}} {
		if got := formatRate(c.v); got != c.want {
			t.Errorf("formatRate(%g) = %q, want %q", c.v, got, c.want)
		}
	}
	for _, c := range []struct{ max, want float64 }{{3150, 1000}, {860, 200}, {215, 50}, {12000, 2500}, {100, 20}} {
		if got := niceStep(c.max, 5); got != c.want {
			t.Errorf("niceStep(%g) = %g, want %g", c.max, got, c.want)
		}
	}
	gpus := []GPU{{Name: "NVIDIA H200", DriverVersion: "580.159.04"}, {Name: "NVIDIA H100 80GB HBM3", DriverVersion: "580.159.04"}, {Name: "NVIDIA H200", DriverVersion: "580.159.04"}}
	if got, want := gpuSummary(gpus), "2 × NVIDIA H200 + 1 × NVIDIA H100 80GB HBM3, driver 580.159.04"; got != want {
		t.Errorf("gpuSummary = %q, want %q", got, want)
	}
	if got := mdCode("a`b"); got != "`` a`b ``" {
		t.Errorf("mdCode = %q", got)
	}
}

func findNodes(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

func nodeAttr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key || strings.EqualFold(a.Key, key) {
			return a.Val
		}
	}
	return ""
}

func hasClass(n *html.Node, class string) bool {
	for _, c := range strings.Fields(nodeAttr(n, "class")) {
		if c == class {
			return true
		}
	}
	return false
}

// textOf is the text of n and its descendants, <title> and <desc> included.
func nodeText(n *html.Node) string {
	var b strings.Builder
	for _, t := range findNodes(n, func(n *html.Node) bool { return n.Type == html.TextNode }) {
		b.WriteString(t.Data)
	}
	return b.String()
}

func parseNum(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		t.Fatalf("not a finite number: %q", s)
	}
	return v
}
