package pipeline

import (
	"context"
	"errors"
	"testing"
)

func TestNewStep(t *testing.T) {
	ctx := context.Background()
	empty := NewStep("noop", nil, nil)
	if empty.ID() != "noop" || empty.Run(ctx) != nil || empty.Cleanup(ctx, OutcomeFailed) != nil {
		t.Errorf("NewStep with nil functions: want ID noop and no-op Run and Cleanup")
	}

	errRun, errCleanup := errors.New("run"), errors.New("cleanup")
	var gotOutcome Outcome
	s := NewStep("s",
		func(context.Context) error { return errRun },
		func(_ context.Context, o Outcome) error { gotOutcome = o; return errCleanup })
	if err := s.Run(ctx); err != errRun {
		t.Errorf("Run = %v, want %v", err, errRun)
	}
	if err := s.Cleanup(ctx, OutcomeCancelled); err != errCleanup || gotOutcome != OutcomeCancelled {
		t.Errorf("Cleanup = %v with outcome %q; want %v with cancelled", err, gotOutcome, errCleanup)
	}
}

func TestStepValidateGraph(t *testing.T) {
	step := func(id string) Step { return NewStep(id, nil, nil) }
	type problem struct {
		is  error
		ids []string
		msg string
	}
	tests := []struct {
		name  string
		nodes []Node
		want  []problem
	}{
		{
			name: "valid",
			nodes: []Node{
				{Step: step("a")},
				{Step: step("b"), After: []string{"a", "a"}},
				{Step: step("c"), After: []string{"a", "b"}},
			},
		},
		{
			name:  "duplicate",
			nodes: []Node{{Step: step("a")}, {Step: step("b")}, {Step: step("a")}},
			want: []problem{{ErrDuplicateStep, []string{"a"},
				`duplicate step ID "a" (nodes 0 and 2)`}},
		},
		{
			name:  "unknown dependency",
			nodes: []Node{{Step: step("a")}, {Step: step("push"), After: []string{"a", "biuld"}}},
			want: []problem{{ErrUnknownDependency, []string{"push", "biuld"},
				`step "push" depends on unknown step "biuld"`}},
		},
		{
			name: "cycle",
			nodes: []Node{
				{Step: step("a"), After: []string{"c"}},
				{Step: step("b"), After: []string{"a"}},
				{Step: step("c"), After: []string{"b"}},
				{Step: step("d"), After: []string{"c"}},
			},
			want: []problem{{ErrCycle, []string{"a", "b", "c", "a"},
				"dependency cycle: a -> b -> c -> a"}},
		},
		{
			name:  "self dependency",
			nodes: []Node{{Step: step("a"), After: []string{"a"}}},
			want:  []problem{{ErrCycle, []string{"a", "a"}, "dependency cycle: a -> a"}},
		},
		{
			name:  "invalid nodes",
			nodes: []Node{{Step: nil}, {Step: step("")}},
			want: []problem{
				{ErrInvalidNode, nil, "node 0 has no step"},
				{ErrInvalidNode, nil, "the step of node 1 has an empty ID"},
			},
		},
		{
			name: "every problem reported",
			nodes: []Node{
				{Step: step("a"), After: []string{"b"}},
				{Step: step("b"), After: []string{"a", "ghost"}},
				{Step: step("b")},
			},
			want: []problem{
				{ErrDuplicateStep, []string{"b"}, `duplicate step ID "b" (nodes 1 and 2)`},
				{ErrUnknownDependency, []string{"b", "ghost"}, `step "b" depends on unknown step "ghost"`},
				{ErrCycle, []string{"a", "b", "a"}, "dependency cycle: a -> b -> a"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateGraph(tt.nodes)
			var got []problem
			if err != nil {
				joined, ok := err.(interface{ Unwrap() []error })
				if !ok {
					t.Fatalf("ValidateGraph error %T is not a join of problems", err)
				}
				for _, e := range joined.Unwrap() {
					var ge *GraphError
					if !errors.As(e, &ge) {
						t.Fatalf("problem %v is not a *GraphError", e)
					}
					if !errors.Is(e, ge.Err) {
						t.Errorf("errors.Is(%v, %v) = false", e, ge.Err)
					}
					got = append(got, problem{ge.Err, ge.IDs, ge.Error()})
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("ValidateGraph = %v; want %d problems", err, len(tt.want))
			}
			for i := range got {
				if got[i].is != tt.want[i].is || got[i].msg != tt.want[i].msg {
					t.Errorf("problem %d = %q (%v); want %q (%v)", i, got[i].msg, got[i].is, tt.want[i].msg, tt.want[i].is)
				}
				diff(t, "IDs", tt.want[i].ids, got[i].ids)
			}
		})
	}
}
