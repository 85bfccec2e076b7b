package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMain lets the test binary act as the bitgpu command when BITGPU_TEST_MAIN=1, so tests can
// run it as a subprocess with their own environment (the Vulkan loader reads it at start-up).
func TestMain(m *testing.M) {
	if os.Getenv("BITGPU_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runCLI runs the command with args and extra environment; it returns stdout, stderr and the
// exit status.
func runCLI(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	return runBitgpu(t, env, nil, args)
}

// runBitgpu runs the test binary as bitgpu with extra environment env and standard input stdin
// (nil: none); it returns stdout, stderr and the exit status.
func runBitgpu(t *testing.T, env []string, stdin io.Reader, args []string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "BITGPU_TEST_MAIN=1"), env...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return out.String(), errb.String(), code
}

func TestDevicesWithoutDriverFailsCleanly(t *testing.T) {
	needVulkanBuild(t)
	out, errOut, code := runCLI(t, []string{"VK_ICD_FILENAMES=/nonexistent/icd.json", "VK_DRIVER_FILES=/nonexistent/icd.json"}, "devices")
	require.Equal(t, 1, code)
	require.Empty(t, out)
	require.Equal(t, 1, strings.Count(errOut, "\n"), "one error line: %q", errOut)
	require.True(t, strings.HasPrefix(errOut, "bitgpu: no Vulkan device"), errOut)
}

func TestDevicesListsTheDriver(t *testing.T) {
	needVulkanBuild(t)
	out, errOut, code := runCLI(t, nil, "devices")
	if code != 0 && strings.Contains(errOut, "no Vulkan device") && os.Getenv("BITGPU_REQUIRE_GPU") != "1" {
		t.Skip(errOut)
	}
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "* [0]")
	for _, key := range []string{"type", "driver", "heap 0", "subgroup", "workgroup", "storage buffer", "timestamps", "features"} {
		require.Contains(t, out, key)
	}
	if icd := os.Getenv("VK_ICD_FILENAMES"); strings.Contains(icd, "lvp_icd") {
		require.Contains(t, out, "llvmpipe")
		require.Contains(t, out, "subgroup        8")
	}
	if icd := os.Getenv("VK_ICD_FILENAMES"); strings.Contains(icd, "swiftshader") {
		require.Contains(t, out, "SwiftShader")
		require.Contains(t, out, "subgroup        4")
	}
}

func TestUnknownCommand(t *testing.T) {
	_, errOut, code := runCLI(t, nil, "frobnicate")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `unknown command "frobnicate"`)
}

// needVulkanBuild skips a test of the Vulkan backend in a build without cgo (haveVulkan false),
// which has none.
func needVulkanBuild(t *testing.T) {
	t.Helper()
	if !haveVulkan {
		t.Skip("built with CGO_ENABLED=0: no Vulkan backend")
	}
}
