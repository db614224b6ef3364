package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Step is one unit of work in a run: build an image, push it, assemble a disk, register an AMI, run a
// validation. It is the typed counterpart of packer-plugin-sdk's multistep.Step: state a step needs travels in
// the step value itself (fields set when the plan is lowered to steps), not in a shared bag.
type Step interface {
	// ID names the step uniquely within a run, for example "image.trainer/build". Dependencies, events, the
	// runner's Result and the build manifest refer to steps by ID.
	ID() string

	// Run does the step's work. It must return promptly once ctx is done, with an error that wraps ctx's
	// error: the runner waits for every running step before it cleans up.
	Run(ctx context.Context) error

	// Cleanup undoes what Run created outside the process (a snapshot, an AMI, a registry tag, a daemon).
	// The runner calls it once, only if it called Run, whether or not Run returned an error; outcome says
	// how the run as a whole ended, so a step may keep its artifacts when outcome is OutcomeSucceeded. ctx is
	// not cancelled when the run is (Ctrl-C does not interrupt a cleanup) but has its own timeout, see
	// WithCleanupTimeout.
	Cleanup(ctx context.Context, outcome Outcome) error
}

// Outcome is how a run as a whole ended. It is passed to every Step's Cleanup and recorded in the Result and the
// build manifest.
type Outcome string

const (
	// OutcomeSucceeded means every step's Run returned nil.
	OutcomeSucceeded Outcome = "succeeded"
	// OutcomeFailed means a step's Run returned an error (or panicked) and the run stopped.
	OutcomeFailed Outcome = "failed"
	// OutcomeCancelled means the run's context was cancelled (Ctrl-C, SIGTERM, a deadline) before every step
	// succeeded, and no step had failed before that.
	OutcomeCancelled Outcome = "cancelled"
)

// String returns the outcome's name, e.g. "failed".
func (o Outcome) String() string { return string(o) }

// Status is what became of one step's Run (or Cleanup) in a run.
type Status string

const (
	// StatusSucceeded means Run (or Cleanup) returned nil.
	StatusSucceeded Status = "succeeded"
	// StatusFailed means Run (or Cleanup) returned an error or panicked.
	StatusFailed Status = "failed"
	// StatusCancelled means Run returned after the run was cancelled or stopped by another step's failure;
	// whatever it returned is kept in StepResult.Err.
	StatusCancelled Status = "cancelled"
	// StatusSkipped means Run was never called: a dependency did not succeed, or the run stopped first.
	StatusSkipped Status = "skipped"
)

// String returns the status's name, e.g. "skipped".
func (s Status) String() string { return string(s) }

// RunFunc is the work of a step made with NewStep.
type RunFunc func(ctx context.Context) error

// CleanupFunc is the cleanup of a step made with NewStep.
type CleanupFunc func(ctx context.Context, outcome Outcome) error

// NewStep returns a Step with the given ID whose Run calls run and whose Cleanup calls cleanup. Either function
// may be nil, meaning "nothing to do". It suits tests and steps simple enough not to need a type of their own.
func NewStep(id string, run RunFunc, cleanup CleanupFunc) Step {
	return &funcStep{id: id, run: run, cleanup: cleanup}
}

type funcStep struct {
	id      string
	run     RunFunc
	cleanup CleanupFunc
}

var _ Step = (*funcStep)(nil)

func (s *funcStep) ID() string { return s.id }

func (s *funcStep) Run(ctx context.Context) error {
	if s.run == nil {
		return nil
	}
	return s.run(ctx)
}

func (s *funcStep) Cleanup(ctx context.Context, outcome Outcome) error {
	if s.cleanup == nil {
		return nil
	}
	return s.cleanup(ctx, outcome)
}

// Node places a Step in a graph: the step runs after every step named in After has succeeded. A run is a slice
// of nodes; their order is the order in which the runner prefers to start steps that are ready at the same
// time, and the order of Result.Steps.
type Node struct {
	Step  Step
	After []string // IDs of steps that must succeed first; repeats are allowed and ignored
}

// Errors a GraphError wraps; match them with errors.Is.
var (
	// ErrInvalidNode is a node with a nil Step or an empty ID.
	ErrInvalidNode = errors.New("invalid node")
	// ErrDuplicateStep is a step ID used by more than one node.
	ErrDuplicateStep = errors.New("duplicate step ID")
	// ErrUnknownDependency is an After entry naming no step in the graph.
	ErrUnknownDependency = errors.New("unknown dependency")
	// ErrCycle is a dependency cycle, including a step that depends on itself.
	ErrCycle = errors.New("dependency cycle")
)

// GraphError is one problem with a graph of nodes. ValidateGraph and Runner.Run return every problem found,
// joined with errors.Join; use errors.As to reach each GraphError.
type GraphError struct {
	Err     error    // ErrInvalidNode, ErrDuplicateStep, ErrUnknownDependency or ErrCycle
	IDs     []string // the step IDs involved; for a cycle, the path, first ID repeated at the end
	Message string   // the problem in words, naming the IDs
}

var _ error = (*GraphError)(nil)

func (e *GraphError) Error() string { return e.Message }

// Unwrap returns e.Err, so that errors.Is(err, ErrCycle) and the like work.
func (e *GraphError) Unwrap() error { return e.Err }

// ValidateGraph checks that every node has a step with a non-empty ID, that IDs are unique, that every
// dependency names a step in the graph, and that there is no dependency cycle. It reports every problem it
// finds, not just the first: the result joins one *GraphError per problem, or is nil.
func ValidateGraph(nodes []Node) error {
	var errs []error
	index := make(map[string]int, len(nodes))
	for i, n := range nodes {
		if n.Step == nil {
			errs = append(errs, &GraphError{Err: ErrInvalidNode,
				Message: fmt.Sprintf("node %d has no step", i)})
			continue
		}
		id := n.Step.ID()
		if id == "" {
			errs = append(errs, &GraphError{Err: ErrInvalidNode,
				Message: fmt.Sprintf("the step of node %d has an empty ID", i)})
			continue
		}
		if j, dup := index[id]; dup {
			errs = append(errs, &GraphError{Err: ErrDuplicateStep, IDs: []string{id},
				Message: fmt.Sprintf("duplicate step ID %q (nodes %d and %d)", id, j, i)})
			continue
		}
		index[id] = i
	}
	for i, n := range nodes {
		if n.Step == nil || n.Step.ID() == "" || index[n.Step.ID()] != i {
			continue
		}
		for _, dep := range n.After {
			if _, ok := index[dep]; !ok {
				errs = append(errs, &GraphError{Err: ErrUnknownDependency, IDs: []string{n.Step.ID(), dep},
					Message: fmt.Sprintf("step %q depends on unknown step %q", n.Step.ID(), dep)})
			}
		}
	}
	for _, cycle := range findCycles(nodes, index) {
		errs = append(errs, &GraphError{Err: ErrCycle, IDs: cycle,
			Message: "dependency cycle: " + strings.Join(cycle, " -> ")})
	}
	return errors.Join(errs...)
}

// findCycles returns one path per back edge found by a depth-first search over the nodes named in index, in node
// order, so the result is deterministic. Each path starts and ends with the ID of the cycle's step that comes
// first in nodes, and goes from a step to one that must run after it ("a -> b": b has a in After).
func findCycles(nodes []Node, index map[string]int) [][]string {
	const (
		white = iota // not visited
		grey         // on the current path
		black        // done
	)
	color := make([]int, len(nodes))
	var path []int
	var cycles [][]string
	var visit func(i int)
	visit = func(i int) {
		color[i] = grey
		path = append(path, i)
		for _, dep := range nodes[i].After {
			j, ok := index[dep]
			if !ok {
				continue
			}
			switch color[j] {
			case white:
				visit(j)
			case grey:
				// path ends with j's dependents back to i; each depends on the next. Reverse it into run
				// order (a -> b: b after a) and start it at the node that comes first in nodes.
				cyc := slices.Clone(path[slices.Index(path, j):])
				slices.Reverse(cyc)
				first := slices.Index(cyc, slices.Min(cyc))
				cyc = append(cyc[first:], cyc[:first]...)
				cycle := make([]string, 0, len(cyc)+1)
				for _, p := range cyc {
					cycle = append(cycle, nodes[p].Step.ID())
				}
				cycles = append(cycles, append(cycle, cycle[0]))
			}
		}
		path = path[:len(path)-1]
		color[i] = black
	}
	for i, n := range nodes {
		if n.Step == nil || n.Step.ID() == "" || index[n.Step.ID()] != i || color[i] != white {
			continue
		}
		visit(i)
	}
	return cycles
}
