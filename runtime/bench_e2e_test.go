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
// records the embedding gather (the token id to x's row), then 9 steps a layer on a CPU device
// like the CI drivers (fusedDecodeNorms: the input norms stay separate there) — rmsnorm_quant,
// the stacked q/k/v GEMV with RoPE and the KV store fused, attention, sub-norm, o,
// rmsnorm_quant, the stacked gate/up GEMV with the GLU fused, sub-norm, down — then the output
// norm and the LM head, one dispatch each (a 10-token cache is one attention split: no merge):
// 9·layers + 3 (9·layers + 2 while the host gathered the row, 10·layers + 2 before rope_kv was
// fused, 14·layers + 2 before q/k/v, gate/up and the GLU were; a GPU also fuses the norms: 5 a
// layer, 6 with a split attention, TestDecodeStructureSplitAttention). Barriers: one when the command buffer begins
// (earlier submissions and host writes visible), one before each dependent stage — every step
// of a layer is one (9), the gather, which depends on nothing recorded, is not — plus the output
// norm and the head, and one at the end making the logits visible to the host: 9·layers + 4. One
// submit a token, also without host-visible VRAM: only the token id crosses the bus, into a
// host-visible buffer (the host-gathered row needed a staging copy there). The greedy step
// (`--temp 0`, GPU.GreedyStructure) writes no logits: the head leaves argmax candidates and
// argmax_reduce picks the token, one dispatch and one dependent stage more — 9·layers + 4
// dispatches and 9·layers + 5 barriers here (before, the same count with the one-workgroup
// argmax in place of argmax_reduce, after 128,256 logits written and read back on 2B4T; a GPU
// fusing the norms also fuses the output norm into the head: 5·layers + 3 and 5·layers + 4).
func TestBenchE2EStructure(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, nil)
	const copyGBps = 10.0
	for _, c := range []struct {
		disable []string
		submits int
	}{{nil, 1}, {[]string{"host-visible-vram"}, 1}} {
		res, err := BenchE2E(gputest.Open(t, c.disable...), m, []int{8}, 2, copyGBps, cpuref.LMHeadQ8_0)
		require.NoError(t, err)
		layers := m.Config.Layers
		require.Equal(t, 9*layers+3, res.DispatchesPerToken, "the gather, 9 steps a layer, the output norm and the head")
		require.Equal(t, 9*layers+4, res.BarriersPerToken, "begin, the dependent stages, end")
		require.Equal(t, c.submits, res.SubmitsPerToken, "%v", c.disable)
		require.Equal(t, 9*layers+4, res.GreedyDispatchesPerToken, "the decode step's, argmax_reduce")
		require.Equal(t, 9*layers+5, res.GreedyBarriersPerToken, "the decode step's, argmax_reduce's stage")
		p := res.Points[0]
		require.Equal(t, p.DecodeBytesPerToken, p.WeightBytesPerToken+p.HeadBytesPerToken+p.KVBytesPerToken)
		require.Equal(t, Q8HeadBytes(m.Config.VocabSize, m.Config.Dim), p.HeadBytesPerToken)
		// The weights a step reads: the plan's, less the head and the embedding table the gather
		// reads one row of (the CPU report's count, DecodeBytesOf).
		plan := res.Plan
		require.Equal(t, plan.Weights-planEmbedBytes(m.Config, cpuref.LMHeadQ8_0)-p.HeadBytesPerToken, p.WeightBytesPerToken)
		require.InDelta(t, copyGBps*1e9/float64(p.DecodeBytesPerToken), p.RooflineTokS, 1e-9)
	}
}

// TestDecodeBytesMatchPlan: the CPU report counts the bytes the GPU's memory plan holds (the plan
// is built on DecodeBytesOf; TestGPUMemoryPlanMatchesAllocation holds both to what the device allocates) —
// DecodeBytesOf's weights and head are PlanMemoryHead's weights less the token-embedding table
// (planEmbedBytes: one row of it is read a token), its KV bytes per token the plan's KV cache per
// token — for ternary and F16 projections and both heads.
func TestDecodeBytesMatchPlan(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, nil)
	c := m.Config
	for _, f16 := range []bool{false, true} {
		for _, head := range []cpuref.LMHead{cpuref.LMHeadF16, cpuref.LMHeadQ8_0} {
			d, p := DecodeBytesOf(c, f16, head), PlanMemoryHead(c, 100, f16, head)
			require.Equal(t, p.Weights-planEmbedBytes(c, head), d.Weights+d.Head, "f16 %v, head %s", f16, head)
			require.Equal(t, p.KVCache, 100*d.KVPerToken)
		}
	}
}
