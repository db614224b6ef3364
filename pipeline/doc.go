// Package pipeline owns how a build is organised and recorded, between a parsed recipe and the engines that
// do the work:
//
//   - the plan: the DAG of targets and stages derived from a recipes.Recipe (plan.go);
//   - steps: a Step is Run plus a Cleanup that undoes what Run created; a Node places a step after others;
//   - the runner: Runner runs a graph of steps concurrently, stops at the first failure or on cancellation
//     (SignalContext turns Ctrl-C and SIGTERM into one), and cleans up in reverse order with a context that
//     the cancellation does not reach;
//   - events: what a run reports as it goes (steps starting and finishing, cleanups, log lines written with
//     Logf and LogWriter) goes to an EventSink, e.g. NewJSONSink, behind Redact so secrets never reach a log;
//   - the build manifest: Manifest, schema version 1, the JSON record of what a build produced (images,
//     disks, AMIs, validation verdicts) and how each step ended; docs/manifest.md documents it.
//
// It holds types and small interfaces, not engine code: building images (BuildKit), pushing them, assembling
// disks, AWS and GPU checks live in builders/ and validate/, which implement Step. The package imports the
// standard library and, for the plan, package recipes only; it logs nothing unless a runner is given a sink.
package pipeline
