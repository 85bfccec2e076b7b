//go:build cgo

package assets_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/runtime"
)

// TestGPUGreedyMatchesCPU runs the greedy continuation on the Vulkan backend (validation layer
// on) and requires the same tokens as the CPU backend. Without a Vulkan device it is skipped,
// unless BITGPU_REQUIRE_GPU=1.
func TestGPUGreedyMatchesCPU(t *testing.T) {
	m, err := assets.Open()
	require.NoError(t, err)
	dev := gputest.Open(t)
	g, err := runtime.NewGPU(dev, m, runtime.GPUOptions{Ctx: 64})
	require.NoError(t, err)
	defer g.Close()
	c, err := cpuref.New(m, 64)
	require.NoError(t, err)
	defer c.Close()
	prompt := promptIDs(m, greedyPrompt)
	want := greedy(t, c, prompt, greedyTokens)
	got := greedy(t, g, prompt, greedyTokens)
	require.Equal(t, m.Tokenizer.Decode(want), m.Tokenizer.Decode(got))
	require.Equal(t, want, got)
}
