//go:build cgo

// Package gputest opens Vulkan devices for tests of packages built on gpu: validation layers on,
// and any validation message fails the test when the device closes.
package gputest

import (
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/gpu"
)

// Open opens the device chosen by the environment (BITGPU_DEVICE, VK_ICD_FILENAMES) with
// validation on and features named in disable turned off. Without a Vulkan device the test is
// skipped, unless BITGPU_REQUIRE_GPU=1 (set by `make test`), where it fails. The device is closed
// in t.Cleanup, which fails the test if the validation layer (synchronization validation
// included) reported anything, or if Close found objects still alive (gpu.ErrLeak): release
// everything made on the device in an earlier t.Cleanup or defer.
func Open(t testing.TB, disable ...string) *gpu.Device {
	t.Helper()
	o := gpu.OptionsFromEnv()
	o.Validate = true
	o.Disable = append(o.Disable, disable...)
	d, err := gpu.Open(o)
	if errors.Is(err, gpu.ErrNoDevice) && os.Getenv("BITGPU_REQUIRE_GPU") != "1" {
		t.Skipf("no Vulkan device: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, d.Close())
		require.Empty(t, d.ValidationMessages(), "validation layer messages")
	})
	return d
}
