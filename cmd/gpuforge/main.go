// Command gpuforge turns an HCL recipe into GPU-ready artifacts: container images, bootable
// machine images and AMIs, and a validation verdict from real GPUs.
//
// This package wires the others together; it is the only one that reads flags or prints.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// Exit codes are part of gpuforge's interface: scripts and CI branch on them. docs/cli.md lists them.
const (
	ExitOK          = 0 // success
	ExitRecipe      = 1 // the recipe or its inputs (-var, -var-file) have errors; diagnostics were printed
	ExitUsage       = 2 // the command line is wrong: unknown flag, command or target
	ExitUnformatted = 3 // fmt -check: some files are not formatted
	ExitFailed      = 4 // a build, push or other step failed
	// ExitValidationFailed (5, in validate.go): a validation's verdict is fail.
	ExitInterrupted = 130 // stopped by SIGINT or SIGTERM after cleanup ran (commands that run steps)
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// exitError carries an exit code up to main; its message, if any, is printed once.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func exitf(code int, format string, args ...any) error {
	return &exitError{code: code, msg: fmt.Sprintf(format, args...)}
}

func main() {
	// containerd's and BuildKit's client packages log through logrus; their warnings (such as
	// "failed check for fsverity support" on every content store) are not the user's concern.
	logrus.SetLevel(logrus.ErrorLevel)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the CLI and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(singleDashFlags(args))
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "gpuforge: "+ee.msg)
		}
		return ee.code
	}
	// cobra's own errors: unknown command or flag, wrong number of arguments.
	fmt.Fprintln(stderr, "gpuforge: "+err.Error())
	fmt.Fprintln(stderr, "Run 'gpuforge --help' for usage.")
	return ExitUsage
}

// singleDashFlags accepts the single-dash long flags Packer and Terraform users type
// (-var, -var-file, -check, -diff) by rewriting them to the double-dash form cobra parses.
func singleDashFlags(args []string) []string {
	long := map[string]bool{"var": true, "var-file": true, "check": true, "diff": true, "format": true, "recursive": true, "target": true, "builder": true, "progress": true, "push": true, "out": true, "metadata-file": true, "tlscacert": true, "tlscert": true, "tlskey": true}
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if a == "--" {
			copy(out[i:], args[i:])
			break
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if long[name] {
				out[i] = "-" + a
			}
		}
	}
	return out
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "gpuforge",
		Short: "Build GPU-ready container images, machine images and AMIs from one HCL recipe",
		Long: `gpuforge turns an HCL recipe into GPU-ready artifacts: container images derived from NGC
framework images, bootable machine images and AWS AMIs carrying the NVIDIA driver, docker and the
NVIDIA container runtime, and a verdict from real GPUs.

Exit codes: 0 success, 1 recipe errors, 2 usage errors, 3 unformatted files (fmt -check),
4 a build step failed, 5 a validation failed, 130 interrupted.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().String(tlsCACertFlag, "", "CA certificate (PEM) that signed a tcp:// builder's certificate")
	root.PersistentFlags().String(tlsCertFlag, "", "client certificate (PEM) for a tcp:// builder that requires mutual TLS")
	root.PersistentFlags().String(tlsKeyFlag, "", "key (PEM) of the client certificate")
	root.PersistentFlags().String("builder", "", "BuildKit daemon to use: unix:///path, tcp://host:port, or a builder's name from the builders file (default $BUILDKIT_HOST, else a local daemon gpuforge starts)")
	root.AddCommand(newCheckCmd(), newPlanCmd(), newFmtCmd(), newVersionCmd(), newBuildCmd(), newBuilderCmd(),
		newPushCmd(), newCopyCmd(), newInspectCmd(), newValidateCmd())
	root.AddCommand(newBootCmd(), newAMICmd())
	return root
}
