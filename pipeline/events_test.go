package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock returns start, then start+tick, start+2*tick, …; safe for concurrent use.
type fakeClock struct {
	mu   sync.Mutex
	t    time.Time
	tick time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(c.tick)
	return t
}

func TestJSONSinkRun(t *testing.T) {
	const secret = "nvapi-s3cr3t"
	clock := &fakeClock{t: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), tick: 250 * time.Millisecond}
	var out bytes.Buffer
	sink := NewJSONSink(&out)
	nodes := []Node{
		{Step: NewStep("fetch", func(ctx context.Context) error {
			Logf(ctx, "logging in with token %s\n", secret)
			w := LogWriter(ctx)
			io.WriteString(w, "pull 1/2\npull 2")
			io.WriteString(w, "/2\r\n <partial> & more")
			return w.Close()
		}, func(ctx context.Context, o Outcome) error {
			Logf(ctx, "keeping cache")
			return nil
		})},
		{Step: NewStep("push", func(ctx context.Context) error {
			return fmt.Errorf("push to registry: 401 for password %s", secret)
		}, nil), After: []string{"fetch"}},
		{Step: NewStep("sign", nil, nil), After: []string{"push"}},
	}
	_, err := run(t, context.Background(), nodes,
		WithConcurrency(1), WithClock(clock.now), WithEventSink(Redact(sink, []string{secret})))
	if err == nil {
		t.Fatal("Run succeeded; push should fail")
	}
	if sink.Err() != nil {
		t.Fatalf("sink: %v", sink.Err())
	}
	want := `{"time":"2026-11-28T12:00:00.25Z","type":"step_started","step":"fetch"}
{"time":"2026-11-28T12:00:00.5Z","type":"log","step":"fetch","message":"logging in with token (sensitive value)"}
{"time":"2026-11-28T12:00:00.75Z","type":"log","step":"fetch","message":"pull 1/2"}
{"time":"2026-11-28T12:00:01Z","type":"log","step":"fetch","message":"pull 2/2"}
{"time":"2026-11-28T12:00:01.25Z","type":"log","step":"fetch","message":" <partial> & more"}
{"time":"2026-11-28T12:00:01.5Z","type":"step_finished","step":"fetch","status":"succeeded","duration_ms":1250}
{"time":"2026-11-28T12:00:01.75Z","type":"step_started","step":"push"}
{"time":"2026-11-28T12:00:02Z","type":"step_finished","step":"push","status":"failed","error":"push to registry: 401 for password (sensitive value)","duration_ms":250}
{"time":"2026-11-28T12:00:02.25Z","type":"step_finished","step":"sign","status":"skipped"}
{"time":"2026-11-28T12:00:02.5Z","type":"cleanup_started","step":"push","outcome":"failed"}
{"time":"2026-11-28T12:00:02.75Z","type":"cleanup_finished","step":"push","status":"succeeded","duration_ms":250,"outcome":"failed"}
{"time":"2026-11-28T12:00:03Z","type":"cleanup_started","step":"fetch","outcome":"failed"}
{"time":"2026-11-28T12:00:03.25Z","type":"log","step":"fetch","message":"keeping cache"}
{"time":"2026-11-28T12:00:03.5Z","type":"cleanup_finished","step":"fetch","status":"succeeded","duration_ms":500,"outcome":"failed"}
`
	diff(t, "JSON lines", strings.Split(want, "\n"), strings.Split(out.String(), "\n"))
	if strings.Contains(out.String(), secret) {
		t.Errorf("the secret reached the log")
	}
}

func TestJSONSinkConcurrent(t *testing.T) {
	var out bytes.Buffer // JSONSink serialises its writes, so a plain buffer is enough
	sink := NewJSONSink(&out)
	const writers, each = 8, 100
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				sink.Emit(Event{Type: EventLog, Step: fmt.Sprintf("s%d", w), Message: fmt.Sprintf("line %d", i)})
			}
		})
	}
	guard(t, wg.Wait)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != writers*each {
		t.Fatalf("%d lines, want %d", len(lines), writers*each)
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if m["type"] != "log" || m["time"] == "" || m["step"] == "" || m["message"] == "" {
			t.Errorf("line %q lacks a field", l)
		}
		if _, ok := m["duration_ms"]; ok {
			t.Errorf("line %q: duration_ms on a log event", l)
		}
	}
}

type failingWriter struct{ calls int }

func (w *failingWriter) Write(p []byte) (int, error) {
	w.calls++
	return 0, errors.New("disk full")
}

func TestJSONSinkWriteError(t *testing.T) {
	w := &failingWriter{}
	sink := NewJSONSink(w)
	sink.Emit(Event{Type: EventLog, Message: "a"})
	sink.Emit(Event{Type: EventLog, Message: "b"})
	if err := sink.Err(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Err() = %v, want the write error", err)
	}
	if w.calls != 1 {
		t.Errorf("%d writes after a failed one; want none", w.calls-1)
	}
}

func TestRedact(t *testing.T) {
	var got []Event
	sink := Redact(SinkFunc(func(e Event) { got = append(got, e) }),
		[]string{"", "hunter2", "hunter2-extended", "tok", "tok"})
	sink.Emit(Event{
		Type:    EventStepFinished,
		Step:    "login-tok",
		Status:  StatusFailed,
		Error:   "bad password hunter2-extended (also hunter2)",
		Message: "toktok",
	})
	want := Event{
		Type:    EventStepFinished,
		Step:    "login-(sensitive value)",
		Status:  StatusFailed,
		Error:   "bad password (sensitive value) (also (sensitive value))",
		Message: "(sensitive value)(sensitive value)",
	}
	diff(t, "redacted event", []Event{want}, got)

	var nilRedactor *Redactor
	for _, r := range []*Redactor{nilRedactor, {}, NewRedactor(nil), NewRedactor([]string{""})} {
		if s := r.Redact("nothing to hide"); s != "nothing to hide" {
			t.Errorf("Redactor without secrets changed the text to %q", s)
		}
	}
}

func TestSinkFuncChanSinkMultiSink(t *testing.T) {
	ch := make(chan Event, 2)
	var n int
	sink := MultiSink(nil, SinkFunc(func(Event) { n++ }), ChanSink(ch))
	sink.Emit(Event{Type: EventLog, Message: "one"})
	sink.Emit(Event{Type: EventLog, Message: "two"})
	if n != 2 || len(ch) != 2 || (<-ch).Message != "one" {
		t.Errorf("MultiSink reached the func %d times and the channel %d times; want 2 and 2, in order", n, len(ch))
	}
}

func TestLogWithoutRunner(t *testing.T) {
	ctx := context.Background()
	Logf(ctx, "dropped")
	w := LogWriter(ctx)
	if n, err := io.WriteString(w, "dropped\ntoo"); n != len("dropped\ntoo") || err != nil {
		t.Errorf("Write = %d, %v", n, err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestEventsNotEmittedAfterRun(t *testing.T) {
	var mu sync.Mutex
	var n int
	sink := SinkFunc(func(Event) { mu.Lock(); n++; mu.Unlock() })
	var leaked context.Context
	nodes := []Node{{Step: NewStep("s", func(ctx context.Context) error { leaked = ctx; return nil }, nil)}}
	if _, err := run(t, context.Background(), nodes, WithEventSink(sink)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	before := n
	mu.Unlock()
	Logf(leaked, "from a goroutine that outlived the run")
	mu.Lock()
	defer mu.Unlock()
	if n != before {
		t.Errorf("an event reached the sink after Run returned")
	}
}
