package bitgpu_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu"
)

// TestTernaryPackingOption: Options.TernaryPacking is checked before the model loads — an unknown
// layout is an error naming the flag — and a known one opens on any backend (the CPU backends
// ignore it: it is a Vulkan layout).
func TestTernaryPackingOption(t *testing.T) {
	_, err := bitgpu.Open("", bitgpu.Options{Device: "cpu", TernaryPacking: "tq1_0"})
	require.EqualError(t, err, `--ternary-packing "tq1_0": want auto, 2bit or base3`)
	for _, p := range []string{"", "auto", "2bit", "base3"} {
		m, err := bitgpu.Open("", bitgpu.Options{Device: "cpu", TernaryPacking: p})
		require.NoError(t, err, p)
		require.NoError(t, m.Close())
	}
}
