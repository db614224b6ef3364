package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpuforge/gpuforge/validate"
)

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// hostValidation checks this machine's GPUs: NVML inventory and health, nvidia-smi, and the
// ResNet-50 benchmark with the host's Python when asked.
func hostValidation(ctx context.Context, vf validateFlags) (*validate.Report, error) {
	spec, err := specFromFlags("validate.host", "host", vf)
	if err != nil {
		return nil, err
	}
	rep := &validate.Report{Validation: spec.name, Target: "host", Selection: spec.selection, Started: time.Now().UTC(), Env: envNames(spec.env)}
	rep.Host, _ = os.Hostname()
	expect := validate.HostExpect{Count: vf.count, Model: vf.model, MinDriver: vf.minDriver, Selection: spec.gpus}
	gpus, checks, err := validate.HostChecks(nvml.New(), expect)
	if err != nil && len(checks) == 0 {
		return nil, exitf(ExitUsage, "%s", err) // the expectation itself is wrong
	}
	rep.GPUs, rep.Checks = gpus, checks
	if err != nil {
		// NVML could not start or count the GPUs: the checks say why; nothing else can run.
		rep.Finished = time.Now().UTC()
		rep.Decide()
		return rep, nil
	}

	files := map[string][]byte{}
	if spec.smi != nil {
		out, err := exec.CommandContext(ctx, validate.NvidiaSMIArgs[0], validate.NvidiaSMIArgs[1:]...).Output()
		files["smi.csv"], files["smi.rc"] = out, []byte(exitCode(err))
		if ee, ok := err.(*exec.ExitError); ok {
			files["smi.err"] = ee.Stderr
		} else if err != nil {
			files["smi.err"] = []byte(err.Error())
		}
	}
	var threshold float64
	var batch int
	var precision string
	if spec.resnet != nil {
		ngpus := len(spec.gpus)
		if ngpus == 0 {
			ngpus = len(gpus)
		}
		var args []string
		args, batch, precision, threshold = resnetSettings(spec.resnet, ngpus)
		dir, err := os.MkdirTemp("", "gpuforge-resnet50-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		script := filepath.Join(dir, "resnet50.py")
		if err := os.WriteFile(script, validate.ResNet50Script, 0o644); err != nil {
			return nil, err
		}
		argv := resnetCommand(args, vf.python, script)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = os.Environ()
		if len(spec.gpus) > 0 {
			cmd.Env = append(cmd.Env, "CUDA_VISIBLE_DEVICES="+spec.selection)
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err = cmd.Run()
		files["resnet50.log"], files["resnet50.rc"] = out.Bytes(), []byte(exitCode(err))
	}
	collect(rep, files, spec, batch, precision, threshold)
	rep.Finished = time.Now().UTC()
	rep.Decide()
	return rep, nil
}

func exitCode(err error) string {
	if err == nil {
		return "0"
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return strconv.Itoa(ee.ExitCode())
	}
	return "127"
}
