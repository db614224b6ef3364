package pipeline

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gpuforge/gpuforge/recipes"
)

// EventType says what an Event reports.
type EventType string

const (
	// EventStepStarted: the runner is about to call a step's Run.
	EventStepStarted EventType = "step_started"
	// EventStepFinished: a step's Run returned (Status succeeded, failed or cancelled, with Duration and Error),
	// or, with Status skipped and no Duration, the run ended without calling it.
	EventStepFinished EventType = "step_finished"
	// EventCleanupStarted: the runner is about to call a step's Cleanup; Outcome is the outcome passed to it.
	EventCleanupStarted EventType = "cleanup_started"
	// EventCleanupFinished: a step's Cleanup returned (Status succeeded or failed, with Duration and Error).
	EventCleanupFinished EventType = "cleanup_finished"
	// EventLog: a step wrote a line with Logf or LogWriter; the text is in Message.
	EventLog EventType = "log"
)

// Event is one thing that happened in a run. Fields that do not apply to the event's Type are zero.
type Event struct {
	Time     time.Time     // when it happened, from the runner's clock (WithClock)
	Type     EventType     // what happened
	Step     string        // the step's ID
	Status   Status        // step_finished, cleanup_finished
	Outcome  Outcome       // cleanup_started, cleanup_finished: the outcome passed to Cleanup
	Error    string        // step_finished, cleanup_finished: the error's text, when there was one
	Duration time.Duration // step_finished, cleanup_finished
	Message  string        // log: one line, without its line ending
}

// EventSink receives a run's events. The runner calls Emit from one goroutine at a time and not after Run has
// returned, but a sink shared by several runs, or used outside a runner, must be safe for concurrent use; the
// sinks in this package are. Emit should not block for long: a run waits for it.
type EventSink interface {
	Emit(e Event)
}

// SinkFunc is an EventSink that calls the function.
type SinkFunc func(e Event)

var _ EventSink = SinkFunc(nil)

// Emit calls f(e).
func (f SinkFunc) Emit(e Event) { f(e) }

// ChanSink returns an EventSink that sends each event on ch. A send blocks until it is received, and so does
// the run; give ch a buffer or drain it from another goroutine until the run returns.
func ChanSink(ch chan<- Event) EventSink { return chanSink(ch) }

type chanSink chan<- Event

var _ EventSink = chanSink(nil)

func (c chanSink) Emit(e Event) { c <- e }

// MultiSink returns an EventSink that emits each event to every sink in turn, e.g. a terminal display and a
// JSON log. Nil sinks are ignored.
func MultiSink(sinks ...EventSink) EventSink {
	return multiSink(slices.DeleteFunc(slices.Clone(sinks), func(s EventSink) bool { return s == nil }))
}

type multiSink []EventSink

var _ EventSink = multiSink(nil)

func (m multiSink) Emit(e Event) {
	for _, s := range m {
		s.Emit(e)
	}
}

// JSONSink writes events as JSON lines: one object per event, one line per object. Field names are stable:
//
//	time         RFC 3339 time in UTC, with fractional seconds when nonzero (always present)
//	type         the EventType, e.g. "step_finished" (always present)
//	step         the step's ID
//	status       succeeded, failed, cancelled or skipped
//	error        the error's text
//	duration_ms  integer milliseconds; present on step_finished and cleanup_finished unless skipped
//	message      a log line
//	outcome      on cleanup events, the outcome passed to Cleanup
//
// Fields without a value are left out. New fields may be added; none will be renamed or change type.
// A JSONSink is safe for concurrent use; each event reaches the writer in one Write call.
type JSONSink struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
	err error
}

var _ EventSink = (*JSONSink)(nil)

// NewJSONSink returns a JSONSink writing to w. Wrap it with Redact before handing it to a runner whose steps may
// log secrets.
func NewJSONSink(w io.Writer) *JSONSink { return &JSONSink{w: w} }

type jsonEvent struct {
	Time       string    `json:"time"`
	Type       EventType `json:"type"`
	Step       string    `json:"step,omitempty"`
	Status     Status    `json:"status,omitempty"`
	Error      string    `json:"error,omitempty"`
	DurationMS *int64    `json:"duration_ms,omitempty"`
	Message    string    `json:"message,omitempty"`
	Outcome    Outcome   `json:"outcome,omitempty"`
}

// Emit writes e as one line. After a write fails, Emit does nothing; Err reports the failure.
func (s *JSONSink) Emit(e Event) {
	t := e.Time
	if t.IsZero() {
		t = time.Now()
	}
	je := jsonEvent{
		Time:    t.UTC().Format(time.RFC3339Nano),
		Type:    e.Type,
		Step:    e.Step,
		Status:  e.Status,
		Error:   e.Error,
		Message: e.Message,
		Outcome: e.Outcome,
	}
	if (e.Type == EventStepFinished || e.Type == EventCleanupFinished) && e.Status != StatusSkipped {
		ms := e.Duration.Milliseconds()
		je.DurationMS = &ms
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.buf.Reset()
	enc := json.NewEncoder(&s.buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(je); err != nil { // cannot happen: jsonEvent holds strings and an integer
		s.err = fmt.Errorf("encode event: %w", err)
		return
	}
	if _, err := s.w.Write(s.buf.Bytes()); err != nil {
		s.err = fmt.Errorf("write event: %w", err)
	}
}

// Err returns the first error writing an event, or nil.
func (s *JSONSink) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// RedactedValue replaces a secret in redacted text: "(sensitive value)", the same text package recipes uses.
const RedactedValue = recipes.Redacted

// Redactor replaces secrets (an NGC API key, a registry password) in text with RedactedValue. The zero
// Redactor, and a nil *Redactor, redact nothing. A Redactor is safe for concurrent use.
type Redactor struct {
	r *strings.Replacer
}

// NewRedactor returns a Redactor for the given secrets. Empty strings are ignored. Where one secret contains
// another, the longer one is replaced whole.
func NewRedactor(secrets []string) *Redactor {
	s := slices.DeleteFunc(slices.Clone(secrets), func(v string) bool { return v == "" })
	if len(s) == 0 {
		return &Redactor{}
	}
	// strings.Replacer tries the old strings in argument order at each position: longest first.
	slices.SortFunc(s, func(a, b string) int {
		return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b))
	})
	s = slices.Compact(s)
	pairs := make([]string, 0, 2*len(s))
	for _, v := range s {
		pairs = append(pairs, v, RedactedValue)
	}
	return &Redactor{r: strings.NewReplacer(pairs...)}
}

// Redact returns s with every occurrence of a secret replaced by RedactedValue.
func (r *Redactor) Redact(s string) string {
	if r == nil || r.r == nil || s == "" {
		return s
	}
	return r.r.Replace(s)
}

// RedactEvent returns e with secrets replaced in its Step, Error and Message.
func (r *Redactor) RedactEvent(e Event) Event {
	e.Step = r.Redact(e.Step)
	e.Error = r.Redact(e.Error)
	e.Message = r.Redact(e.Message)
	return e
}

// Redact returns an EventSink that replaces every occurrence of a secret in an event's step ID, error and
// message with RedactedValue before passing the event to sink. Put it closest to the runner, in front of every
// sink that writes or shows events, so that sensitive values never reach a log. A secret split across two
// writes to a LogWriter that do not end a line is still redacted: LogWriter emits whole lines.
func Redact(sink EventSink, secrets []string) EventSink {
	return &redactSink{sink: sink, r: NewRedactor(secrets)}
}

type redactSink struct {
	sink EventSink
	r    *Redactor
}

var _ EventSink = (*redactSink)(nil)

func (s *redactSink) Emit(e Event) { s.sink.Emit(s.r.RedactEvent(e)) }

// emitter is the runner's side of a sink: it stamps events with the run's clock, serialises calls to Emit and
// drops events once the run has returned.
type emitter struct {
	mu     sync.Mutex
	sink   EventSink
	clock  func() time.Time
	closed bool
}

func (em *emitter) emit(e Event) {
	em.mu.Lock()
	defer em.mu.Unlock()
	if em.closed || em.sink == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = em.clock()
	}
	em.sink.Emit(e)
}

func (em *emitter) close() {
	em.mu.Lock()
	defer em.mu.Unlock()
	em.closed = true
}

type logKey struct{}

// stepLog is what the runner puts in the context of a step's Run and Cleanup.
type stepLog struct {
	em   *emitter
	step string
}

func withStepLog(ctx context.Context, em *emitter, step string) context.Context {
	return context.WithValue(ctx, logKey{}, &stepLog{em: em, step: step})
}

func stepLogFrom(ctx context.Context) *stepLog {
	l, _ := ctx.Value(logKey{}).(*stepLog)
	return l
}

// Logf emits a log event for the step whose Run or Cleanup received ctx (or a context derived from it), with
// the formatted text as its message; a trailing newline is dropped. With any other context it does nothing:
// libraries log nothing unless a runner, and so the CLI, asked for it.
func Logf(ctx context.Context, format string, args ...any) {
	l := stepLogFrom(ctx)
	if l == nil {
		return
	}
	msg := strings.TrimSuffix(fmt.Sprintf(format, args...), "\n")
	msg = strings.TrimSuffix(msg, "\r")
	l.em.emit(Event{Type: EventLog, Step: l.step, Message: msg})
}

// LogWriter returns a writer for the output of a tool a step runs (a build's progress, a VM's serial console):
// each line written becomes a log event of the step whose Run or Cleanup received ctx, without its line ending.
// Close emits a last line that has no line ending. With a context that did not come from a runner, what is
// written is discarded. The writer is safe for concurrent use.
func LogWriter(ctx context.Context) io.WriteCloser {
	return &lineWriter{log: stepLogFrom(ctx)}
}

type lineWriter struct {
	mu   sync.Mutex
	log  *stepLog
	part []byte // the line so far, without a newline
}

var _ io.WriteCloser = (*lineWriter)(nil)

func (w *lineWriter) Write(p []byte) (int, error) {
	if w.log == nil {
		return len(p), nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.part = append(w.part, p...)
			return n, nil
		}
		w.part = append(w.part, p[:i]...)
		w.flush()
		p = p[i+1:]
	}
}

// flush emits the line in w.part; w.mu is held.
func (w *lineWriter) flush() {
	line := string(bytes.TrimSuffix(w.part, []byte("\r")))
	w.part = w.part[:0]
	w.log.em.emit(Event{Type: EventLog, Step: w.log.step, Message: line})
}

// Close emits the last line if it has no line ending. Writes after Close start a new line.
func (w *lineWriter) Close() error {
	if w.log == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.part) > 0 {
		w.flush()
	}
	return nil
}
