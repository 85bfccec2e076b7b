//go:build !cgo

package main

import (
	"errors"
	"io"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/runtime"
)

// errNoVulkan is what the Vulkan-only commands and flags say in a build without cgo, which has no
// Vulkan backend (the binding to the Vulkan loader is cgo).
var errNoVulkan = errors.New("this build has no Vulkan backend (built with CGO_ENABLED=0); --device cpu works, rebuild with cgo for the GPU")

// In a build without cgo, `devices` and `bench kernels` exist (scripts keep working) and fail
// with one error line (bench_nocgo.go; `bench e2e` runs with --device cpu or cpuref); --device
// gpu falls back to the CPU with a warning, as without a Vulkan device.
func init() {
	rootCmd.AddCommand(&cobra.Command{
		Use:   "devices",
		Short: "List Vulkan devices with their limits and features",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return errNoVulkan },
	})
}

// enableProfile: --profile needs the GPU backend.
func enableProfile(runtime.Backend) error {
	return errors.New("--profile: " + errNoVulkan.Error())
}

// printProfile has nothing to print without the GPU backend.
func printProfile(io.Writer, runtime.Backend) {}

// haveVulkan reports whether this build has the Vulkan backend.
const haveVulkan = false
