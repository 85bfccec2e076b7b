//go:build cgo

package runtime

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/model"
)

// TestGPUChunkedPrefillEqualsOnePrefill checks the contract on the Vulkan backend, with chunks that cross
// its own 64-token prefill chunks (MaxBatch) and tiles of 8 at other places.
func TestGPUChunkedPrefillEqualsOnePrefill(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, nil)
	g, err := NewGPU(gputest.Open(t), m, GPUOptions{Ctx: 160})
	require.NoError(t, err)
	defer g.Close()
	tokens := make([]int, 150)
	for i := range tokens {
		tokens[i] = (i*37 + 11) % m.Config.VocabSize
	}
	requireChunkedPrefillExact(t, g, tokens, [][]int{{5, 145}, {70, 75, 5}, {64, 1, 85}})
}
