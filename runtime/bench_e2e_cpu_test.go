package runtime

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// Bytes one decode step of the built-in model (dim 256, 4 layers, 4 heads / 2 KV heads of 64,
// FFN 768, vocabulary 768, sub-norms) reads, from its shapes:
//
//	projections  256·(256+128+128+256) + 3·256·768 = 786432 ternary weights a layer, /4 = 196608 B
//	norms        (256 + 256 + 256 + 768) f32 a layer = 6144 B; output norm 1024 B
//	weights      4·(196608+6144) + 1024 = 812032 B
//	q8_0 head    768·256 int8 + 768·8 f16 scales = 196608 + 12288 = 208896 B (F16: 393216 B)
//	KV           4 layers · 128 (2 KV heads · 64) · K and V · 2 B = 2048 B per token of context
const (
	builtinWeightBytes = 812032
	builtinQ8HeadBytes = 208896
	builtinF16Head     = 393216
	builtinKVPerToken  = 2048
)

// TestDecodeBytesOf: the bytes per decode token from a model's shapes, for the built-in model and
// the 2B4T shapes (README: 870 MB of weights and head with the q8_0 head, 1178 MB with F16).
func TestDecodeBytesOf(t *testing.T) {
	m, err := assets.Open()
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, DecodeBytes{builtinWeightBytes, builtinQ8HeadBytes, builtinKVPerToken}, DecodeBytesOf(m.Config, false, cpuref.LMHeadQ8_0))
	require.Equal(t, DecodeBytes{builtinWeightBytes, builtinF16Head, builtinKVPerToken}, DecodeBytesOf(m.Config, false, cpuref.LMHeadF16))
	// F16 projections: 786432·2 B a layer instead of 196608.
	require.Equal(t, uint64(4*(1572864+6144)+1024), DecodeBytesOf(m.Config, true, cpuref.LMHeadF16).Weights)

	o, err := model.SynthPreset("2b4t")
	require.NoError(t, err)
	c := model.Config{Dim: o.Dim, Layers: o.Layers, Heads: o.Heads, KVHeads: o.KVHeads, HeadDim: o.Dim / o.Heads,
		FFNDim: o.FFN, VocabSize: o.Vocab, SubNorms: true}
	// 30·((2560·(2560+640+640+2560) + 3·2560·6912)/4 + 4·(2·2560+2560+6912)) + 4·2560
	const weights2B4T = 30*(69468160/4+4*14592) + 4*2560
	require.Equal(t, DecodeBytes{weights2B4T, 128256*2560 + 128256*80*2, 30 * 640 * 2 * 2}, DecodeBytesOf(c, false, cpuref.LMHeadQ8_0))
	require.Equal(t, uint64(871628800), weights2B4T+DecodeBytesOf(c, false, cpuref.LMHeadQ8_0).Head)
	require.Equal(t, uint64(1179443200), weights2B4T+DecodeBytesOf(c, false, cpuref.LMHeadF16).Head)
}

// TestBenchE2ECPUStructure: bench e2e's figures on the CPU backends — one run per thread count,
// each point's bytes from the model's shapes (not timings), the roofline and efficiency from the
// run's own memcpy bandwidth, the prefill and decode spread around the medians, and the thread
// speed-up relative to the first count (exactly 1 for the first).
func TestBenchE2ECPUStructure(t *testing.T) {
	m, err := assets.Open()
	require.NoError(t, err)
	defer m.Close()
	const steps, rounds = 4, 2
	contexts := []int{8, 16}
	for _, c := range []struct {
		ref     bool
		head    cpuref.LMHead
		threads []int
		backend string
		headB   uint64
	}{
		{false, cpuref.LMHeadQ8_0, []int{1, 2}, "cpu", builtinQ8HeadBytes},
		{false, cpuref.LMHeadF16, []int{2}, "cpu", builtinF16Head},
		{true, cpuref.LMHeadQ8_0, []int{1}, "cpuref", builtinQ8HeadBytes},
	} {
		res, copies, err := BenchE2ECPU(m, CPUE2EOptions{Contexts: contexts, Steps: steps, Threads: c.threads, Rounds: rounds,
			Reference: c.ref, LMHead: c.head, CopyBytes: 4 << 20})
		require.NoError(t, err)
		require.Len(t, res, len(c.threads))
		require.Len(t, copies, len(c.threads))
		for i, r := range res {
			cp := copies[i]
			require.Equal(t, c.threads[i], cp.Threads)
			require.Equal(t, "copy", cp.Kernel)
			require.Equal(t, uint64(8<<20), cp.Bytes, "read and written")
			require.InDelta(t, float64(cp.Bytes)/cp.MedianNS, cp.GBps, 1e-9)
			require.LessOrEqual(t, cp.MinNS, cp.MedianNS)
			require.LessOrEqual(t, cp.MedianNS, cp.MaxNS)

			require.Equal(t, c.threads[i], r.Threads)
			require.Equal(t, c.backend, r.Backend)
			require.Equal(t, string(c.head), r.LMHead)
			require.Equal(t, "ternary", r.Weights)
			require.Equal(t, rounds, r.Rounds)
			require.Equal(t, cp.GBps, r.CopyGBps)
			if c.ref {
				require.Empty(t, r.Kernel)
			} else {
				require.Contains(t, []string{"avx512vnni", "avx2", "neon-dotprod", "neon", "lut"}, r.Kernel)
			}
			require.Len(t, r.Points, len(contexts))
			require.Len(t, r.DecodeSpeedup, len(contexts))
			for k, p := range r.Points {
				L := contexts[k]
				require.Equal(t, L, p.Context)
				require.Equal(t, uint64(builtinWeightBytes), p.WeightBytesPerToken)
				require.Equal(t, c.headB, p.HeadBytesPerToken)
				require.Equal(t, uint64(builtinKVPerToken*(L+steps/2)), p.KVBytesPerToken, "the mean context of the steps")
				require.Equal(t, builtinWeightBytes+c.headB+uint64(builtinKVPerToken*(L+steps/2)), p.DecodeBytesPerToken)
				require.Equal(t, builtinWeightBytes+c.headB+uint64(builtinKVPerToken*(L+steps)), p.DeviceBytes)
				require.InDelta(t, r.CopyGBps*1e9/float64(p.DecodeBytesPerToken), p.RooflineTokS, 1e-6)
				require.InDelta(t, p.DecodeTokS/p.RooflineTokS, p.BandwidthEfficiency, 1e-12)
				require.InDelta(t, 1e3/p.DecodeTokS, p.DecodeMSPerToken, 1e-9)
				require.InDelta(t, 1e3/p.PrefillMSPerToken, p.PrefillTokS, 1e-9)
				require.Equal(t, rounds, p.PrefillRuns)
				require.LessOrEqual(t, p.PrefillMSPerTokenMin, p.PrefillMSPerToken)
				require.LessOrEqual(t, p.PrefillMSPerToken, p.PrefillMSPerTokenMax)
				// A round's rate is its steps' mean, so the median rate lies within the steps.
				require.LessOrEqual(t, p.DecodeMSPerTokenMin, p.DecodeMSPerToken)
				require.LessOrEqual(t, p.DecodeMSPerToken, p.DecodeMSPerTokenMax)
				if i == 0 {
					require.Equal(t, 1.0, r.DecodeSpeedup[k])
				} else {
					require.Greater(t, r.DecodeSpeedup[k], 0.0)
				}
			}
		}
	}
}

// TestBenchE2ECPUErrors: the options BenchE2ECPU refuses, each naming the value.
func TestBenchE2ECPUErrors(t *testing.T) {
	m, err := assets.Open()
	require.NoError(t, err)
	defer m.Close()
	for _, c := range []struct {
		o    CPUE2EOptions
		want string
	}{
		{CPUE2EOptions{Steps: 1}, "need context lengths"},
		{CPUE2EOptions{Contexts: []int{8}}, "need context lengths"},
		{CPUE2EOptions{Contexts: []int{0}, Steps: 1}, "context length 0"},
		{CPUE2EOptions{Contexts: []int{250}, Steps: 8}, "context 250 + 8 decode steps exceeds the model's 256"},
		{CPUE2EOptions{Contexts: []int{8}, Steps: 1, Threads: []int{1, 0}}, "0 threads"},
	} {
		_, _, err := BenchE2ECPU(m, c.o)
		require.ErrorContains(t, err, c.want)
	}
}
