//go:build !cgo

package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBuildWithoutCgo: a CGO_ENABLED=0 build runs the CPU backend (auto picks it and says why),
// forcing the GPU falls back with one warning, and the Vulkan-only commands fail with one line.
func TestBuildWithoutCgo(t *testing.T) {
	out, errOut, code := runCLI(t, nil, "--version")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "CGO_ENABLED=0, without the Vulkan backend")

	ref, errOut, code := runCLI(t, nil, "generate", "-p", "The", "-n", "4", "--temp", "0", "--device", "cpu")
	require.Equal(t, 0, code, errOut)
	out, errOut, code = runCLI(t, nil, "generate", "-p", "The", "-n", "4", "--temp", "0", "-v")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, ref, out)
	require.Contains(t, errOut, "--device auto: cpu: this build has no Vulkan backend")
	out, errOut, code = runCLI(t, nil, "generate", "-p", "The", "-n", "4", "--temp", "0", "--device", "gpu")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, ref, out)
	require.True(t, strings.HasPrefix(errOut, "bitgpu: warning: no Vulkan device (this build has no Vulkan backend"), errOut)

	for _, args := range [][]string{{"devices"}, {"bench", "e2e"}, {"generate", "-p", "x", "--profile", "--device", "cpu"}} {
		out, errOut, code = runCLI(t, nil, args...)
		requireOneErrorLine(t, out, errOut, code, "built with CGO_ENABLED=0")
	}
}
