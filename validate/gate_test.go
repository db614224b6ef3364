package validate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpuforge/gpuforge/pipeline"
	"github.com/gpuforge/gpuforge/recipes"
)

// TestFailedValidationStopsPublishing runs a recipe's plan through the real runner, with each
// validation's check stage running the NVML host checks on go-nvml's simulated 8×H200: when
// the simulator has a fault, the validation fails and the publish stages that wait for it (the
// image push, the AMI distribution) never run; on a healthy simulator they do.
func TestFailedValidationStopsPublishing(t *testing.T) {
	const recipe = `
framework "pytorch" {
  image = "nvcr.io/nvidia/pytorch:24.10-py3"
}

image "trainer" {
  from = framework.pytorch
  tags = ["registry.example.com/ml/trainer:1"]
  push = true
}

validate "trainer-gpu" {
  target = image.trainer
  nvidia_smi {
    expect_count = 8
  }
}

base "ubuntu" {
  image = "docker.io/library/ubuntu:24.04"
}

machine_image "node" {
  from   = base.ubuntu
  kernel = "linux-aws"
  ami {
    name    = "node"
    regions = ["us-east-1", "us-west-2"]
  }
}

validate "node-host" {
  target = machine_image.node
  host {
    expect_count = 8
  }
}
`
	r, diags := recipes.LoadSource("recipe.hcl", []byte(recipe), recipes.Options{Env: []string{}})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	plan, err := pipeline.NewPlan(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		lib       func() nvml.Interface
		wantRan   []string
		wantNever []string
	}{
		{"healthy", func() nvml.Interface { return healthyH200() }, []string{"image.trainer/push", "machine_image.node/ami-distribute"}, nil},
		{"ecc-errors-on-gpu3", func() nvml.Interface {
			s := healthyH200()
			hostSimDevice(s, 3).GetTotalEccErrorsFunc = func(typ nvml.MemoryErrorType, _ nvml.EccCounterType) (uint64, nvml.Return) {
				if typ == nvml.MEMORY_ERROR_TYPE_UNCORRECTED {
					return 4, nvml.SUCCESS
				}
				return 0, nvml.SUCCESS
			}
			return s
		}, nil, []string{"image.trainer/push", "machine_image.node/ami-distribute"}},
		{"a-gpu-missing", func() nvml.Interface {
			s := healthyH200()
			s.DeviceGetCountFunc = func() (int, nvml.Return) { return 7, nvml.SUCCESS }
			return s
		}, nil, []string{"image.trainer/push", "machine_image.node/ami-distribute"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			ran := map[string]bool{}
			var verdicts []string
			nodes := plan.Graph(func(s *pipeline.Stage) pipeline.Step {
				return pipeline.NewStep(s.ID, func(ctx context.Context) error {
					mu.Lock()
					ran[s.ID] = true
					mu.Unlock()
					if s.Kind != pipeline.StageCheck {
						return nil // building, pushing and distributing are recorded, not performed
					}
					_, checks, err := HostChecks(tc.lib(), HostExpect{Count: 8, Model: "H200"})
					if err != nil {
						return err
					}
					rep := &Report{Validation: s.Target, Checks: checks}
					mu.Lock()
					verdicts = append(verdicts, fmt.Sprintf("%s=%s", s.Target, rep.Decide()))
					mu.Unlock()
					if rep.Verdict != VerdictPass {
						var msgs []string
						for _, c := range rep.Failed() {
							msgs = append(msgs, c.Message)
						}
						return fmt.Errorf("%s failed: %s", s.Target, strings.Join(msgs, "; "))
					}
					return nil
				}, nil)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := pipeline.NewRunner(pipeline.WithConcurrency(1)).Run(ctx, nodes)
			for _, id := range tc.wantRan {
				if !ran[id] {
					t.Errorf("%s did not run (verdicts %v, err %v)", id, verdicts, err)
				}
			}
			for _, id := range tc.wantNever {
				if ran[id] {
					t.Errorf("%s ran although a validation it waits for failed (verdicts %v)", id, verdicts)
				}
				if st, ok := res.Step(id); ok && st.Status == pipeline.StatusSucceeded {
					t.Errorf("%s succeeded", id)
				}
			}
			if len(tc.wantNever) > 0 {
				if !strings.Contains(strings.Join(verdicts, " "), "=fail") {
					t.Errorf("no validation reached a fail verdict (verdicts %v): the test proves nothing", verdicts)
				}
				var se *pipeline.StepError
				if err == nil || !errors.As(err, &se) || !strings.HasPrefix(se.StepID, "validate.") {
					t.Errorf("run error = %v, want the failing validation named", err)
				}
			} else if err != nil {
				t.Errorf("healthy run failed: %v", err)
			}
		})
	}
}
