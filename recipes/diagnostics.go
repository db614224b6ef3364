package recipes

import (
	"bytes"
	"encoding/json"
	"io"

	"github.com/hashicorp/hcl/v2"
)

// DiagnosticJSON is the machine-readable form of one diagnostic (gpuforge check --format json).
// Its fields are stable: later versions only add fields.
type DiagnosticJSON struct {
	Severity string     `json:"severity"` // "error" | "warning"
	Summary  string     `json:"summary"`
	Detail   string     `json:"detail,omitempty"`
	Range    *RangeJSON `json:"range,omitempty"`
}

// RangeJSON is a source range: file, and start and end positions (1-based line and column, 0-based byte).
type RangeJSON struct {
	Filename string  `json:"filename"`
	Start    PosJSON `json:"start"`
	End      PosJSON `json:"end"`
}

// PosJSON is one position in a file.
type PosJSON struct {
	Line   int `json:"line"`
	Column int `json:"column"`
	Byte   int `json:"byte"`
}

// DiagnosticsJSON is the document gpuforge check --format json prints.
type DiagnosticsJSON struct {
	Valid        bool             `json:"valid"`
	ErrorCount   int              `json:"error_count"`
	WarningCount int              `json:"warning_count"`
	Diagnostics  []DiagnosticJSON `json:"diagnostics"`
}

// ToJSON converts diagnostics to their JSON form.
func ToJSON(diags hcl.Diagnostics) DiagnosticsJSON {
	out := DiagnosticsJSON{Diagnostics: []DiagnosticJSON{}}
	for _, d := range diags {
		j := DiagnosticJSON{Summary: d.Summary, Detail: d.Detail, Severity: "error"}
		if d.Severity == hcl.DiagWarning {
			j.Severity = "warning"
			out.WarningCount++
		} else {
			out.ErrorCount++
		}
		if d.Subject != nil {
			s := d.Subject
			j.Range = &RangeJSON{
				Filename: s.Filename,
				Start:    PosJSON{Line: s.Start.Line, Column: s.Start.Column, Byte: s.Start.Byte},
				End:      PosJSON{Line: s.End.Line, Column: s.End.Column, Byte: s.End.Byte},
			}
		}
		out.Diagnostics = append(out.Diagnostics, j)
	}
	out.Valid = out.ErrorCount == 0
	return out
}

// WriteDiagnostics renders diagnostics as text with source snippets (HCL's text writer) or as
// JSON, with every sensitive value of the recipe replaced. width 0 means no wrapping.
func WriteDiagnostics(w io.Writer, r *Recipe, diags hcl.Diagnostics, format string, width uint, color bool) error {
	// Redact the messages before rendering, so wrapping cannot split a value across lines;
	// the rendered text is redacted again for snippets and "with" clauses.
	redacted := make(hcl.Diagnostics, len(diags))
	for i, d := range diags {
		c := *d
		c.Summary, c.Detail = r.Redact(d.Summary), r.Redact(d.Detail)
		redacted[i] = &c
	}
	diags = redacted
	var buf bytes.Buffer
	switch format {
	case "json":
		// The messages are already redacted; the encoded document is not touched again, so
		// redaction can never break its syntax.
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(ToJSON(diags))
	default:
		var files map[string]*hcl.File
		if r != nil {
			files = r.Files
		}
		if err := hcl.NewDiagnosticTextWriter(&buf, files, width, color).WriteDiagnostics(diags); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, r.Redact(buf.String()))
	return err
}
