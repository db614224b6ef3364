package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print gpuforge's version and the versions of the libraries it speaks through",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "gpuforge %s\n", version)
			fmt.Fprintf(w, "  go:        %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, dep := range bi.Deps {
					switch dep.Path {
					case "github.com/moby/buildkit":
						fmt.Fprintf(w, "  buildkit:  %s\n", dep.Version)
					case "github.com/hashicorp/hcl/v2":
						fmt.Fprintf(w, "  hcl:       %s\n", dep.Version)
					}
				}
			}
			return nil
		},
	}
}
