//go:build cgo

package runtime

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/model"
)

// TestBenchE2ESpread: every point keeps the spread behind its latencies — the fastest and
// slowest prefill run around their median and decode step around their mean — which the
// end-to-end plots draw as error bars.
func TestBenchE2ESpread(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, nil)
	res, err := BenchE2E(gputest.Open(t), m, []int{8, 16}, 4, 0, cpuref.DefaultLMHead)
	require.NoError(t, err)
	require.Len(t, res.Points, 2)
	for _, p := range res.Points {
		require.Equal(t, 3, p.PrefillRuns, "a fast prefill is timed e2ePrefillRuns times")
		require.Greater(t, p.PrefillMSPerTokenMin, 0.0)
		require.LessOrEqual(t, p.PrefillMSPerTokenMin, p.PrefillMSPerToken)
		require.GreaterOrEqual(t, p.PrefillMSPerTokenMax, p.PrefillMSPerToken)
		require.Less(t, p.PrefillMSPerTokenMin, p.PrefillMSPerTokenMax, "three runs never take the same nanoseconds")
		require.Greater(t, p.DecodeMSPerTokenMin, 0.0)
		require.LessOrEqual(t, p.DecodeMSPerTokenMin, p.DecodeMSPerToken)
		require.GreaterOrEqual(t, p.DecodeMSPerTokenMax, p.DecodeMSPerToken)
	}
}

// TestBenchE2EStructure: the structural figures of a decode step. The tiny model (2 layers)
// records 9 steps a layer — rmsnorm_quant, the stacked q/k/v GEMV with RoPE and the KV store
// fused, attention, sub-norm, o, rmsnorm_quant, the stacked gate/up GEMV with the GLU fused,
// sub-norm, down — then the output norm and the LM head, one dispatch each (a 10-token cache is
// one attention split: no merge): 9·layers + 2 (10·layers + 2 before rope_kv was fused, 14·layers
// + 2 before q/k/v, gate/up and the GLU were). Barriers: one when the command buffer begins
// (earlier submissions and host writes visible), one before each dependent stage — every step of
// a layer is one (9), less the first norm, which depends on nothing recorded, plus the output
// norm and the head — and one at the end making the logits visible to the host: 9·layers + 3
// (10·layers + 3 before rope_kv was fused, 11·layers + 3 before the GLU was).
func TestBenchE2EStructure(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, nil)
	const copyGBps = 10.0
	for _, c := range []struct {
		disable []string
		submits int
	}{{nil, 1}, {[]string{"host-visible-vram"}, 2}} {
		res, err := BenchE2E(gputest.Open(t, c.disable...), m, []int{8}, 2, copyGBps, cpuref.LMHeadQ8_0)
		require.NoError(t, err)
		layers := m.Config.Layers
		require.Equal(t, 9*layers+2, res.DispatchesPerToken, "9 steps a layer, the output norm and the head")
		require.Equal(t, 9*layers+3, res.BarriersPerToken, "begin, the dependent stages, end")
		require.Equal(t, c.submits, res.SubmitsPerToken, "%v", c.disable)
		p := res.Points[0]
		require.Equal(t, p.DecodeBytesPerToken, p.WeightBytesPerToken+p.HeadBytesPerToken+p.KVBytesPerToken)
		require.Equal(t, Q8HeadBytes(m.Config.VocabSize, m.Config.Dim), p.HeadBytesPerToken)
		require.InDelta(t, copyGBps*1e9/float64(p.DecodeBytesPerToken), p.RooflineTokS, 1e-9)
	}
}
