//go:build !cgo

package main

import "github.com/spf13/cobra"

// Without cgo there is no Vulkan backend: `bench kernels` and `bench e2e --device gpu` (the
// default) fail with errNoVulkan's one line; `bench e2e --device cpu` runs.
func init() {
	benchCmd().AddCommand(&cobra.Command{
		Use:                "kernels",
		Short:              "Time the copy, ternary GEMV and F16 GEMV kernels on the 2B4T shapes",
		DisableFlagParsing: true,
		RunE:               func(*cobra.Command, []string) error { return errNoVulkan },
	})
}

// runE2EGPU: bench e2e --device gpu needs the Vulkan backend.
func runE2EGPU(*cobra.Command, e2eOptions) error { return errNoVulkan }
