//go:build cgo

package runtime

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/internal/benchloop"
	"github.com/bitgpu/bitgpu/model"
)

// TestGPULoRAMatchesCPU: with LoRA adapters the GPU's logits equal cpuref's bit for bit —
// prefill (the f16 GEMM path of the terms) and decode — for every family (sub-norms or not,
// ReLU² or SiLU), for adapters on every projection, on attention only (the FFN stays fused) and
// on the FFN only (q/k/v stay fused with RoPE), two adapters at once (one of odd rank), and after
// SetLoRAScales changes the scales (the steps re-recorded), including switching one off (the
// partial target sets on the first family only, to keep SwiftShader's run short). The memory plan
// still equals what the device allocated.
func TestGPULoRAMatchesCPU(t *testing.T) {
	prompt := []int{1, 40, 41, 72, 101, 108, 108, 111, 32, 119, 111, 114}
	for _, fam := range model.SynthFamilies {
		for ti, targets := range [][]string{nil, {"attn_q", "attn_v", "attn_output"}, {"ffn_gate", "ffn_up", "ffn_down"}} {
			if ti > 0 && fam != model.SynthFamilies[0] { // partial targets: one family is enough
				continue
			}
			t.Run(fmt.Sprintf("%s/%v", fam, targets), func(t *testing.T) {
				m := synthModel(t, model.TypeI2_S, func(o *model.SynthOptions) { o.Family = fam })
				l1, err := model.SynthLoRA(m.Config, 8, 16, 1, 1, targets)
				require.NoError(t, err)
				l2, err := model.SynthLoRA(m.Config, 3, 6, 1, 2, []string{"attn_k", "ffn_down"})
				require.NoError(t, err)
				ads := []cpuref.Adapter{{LoRA: l1, Scale: 1}, {LoRA: l2, Scale: 0.5}}
				dev := gputest.Open(t)
				before := dev.Live()
				g, err := NewGPU(dev, m, GPUOptions{Ctx: 64, LoRA: ads})
				require.NoError(t, err)
				t.Cleanup(func() {
					require.NoError(t, g.Close())
					require.Equal(t, before, dev.Live(), "Close releases everything, the adapters' buffers too")
				})
				require.Equal(t, g.Plan().Total(), dev.Live().BufferBytes-before.BufferBytes, "memory plan %s", g.Plan())
				c, err := cpuref.New(m, 64, cpuref.WithLoRA(ads...))
				require.NoError(t, err)
				requireSameForward(t, c, g, prompt, 4)
				for _, scales := range [][]float32{{0, 2}, {1, 0}} {
					require.NoError(t, c.SetLoRAScales(scales))
					require.NoError(t, g.SetLoRAScales(scales))
					c.Reset()
					g.Reset()
					requireSameForward(t, c, g, prompt, 4)
				}
			})
		}
	}
}

// TestGPULoRAFusedNorms: with the decode step's input norms fused into the GEMVs (a real GPU's
// path, forced here on the CPU drivers), adapters on some projections (the rest stay fused) still
// give cpuref's bits.
func TestGPULoRAFusedNorms(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, nil)
	l, err := model.SynthLoRA(m.Config, 8, 16, 1, 3, []string{"attn_v", "ffn_up", "attn_output"})
	require.NoError(t, err)
	ads := []cpuref.Adapter{{LoRA: l, Scale: 1}}
	g, err := NewGPU(gputest.Open(t), m, GPUOptions{Ctx: 64, LoRA: ads, fuseNorms: true})
	require.NoError(t, err)
	defer g.Close()
	c, err := cpuref.New(m, 64, cpuref.WithLoRA(ads...))
	require.NoError(t, err)
	requireSameForward(t, c, g, []int{1, 40, 41, 72, 101, 108, 108, 111}, 4)
}

// TestGPULoRAF16AndGreedy: the F16-projection model (the bench baseline: the terms read the
// normed f32 inputs the F16 GEMVs read) gives cpuref's bits with adapters, the on-device greedy
// step picks cpuref's argmax after a scale change (the greedy step re-recorded with the new
// scales), a GPU without adapters accepts no scales, and a wrong count changes nothing.
func TestGPULoRAF16AndGreedy(t *testing.T) {
	m := synthModel(t, model.TypeF16, nil)
	l, err := model.SynthLoRA(m.Config, 4, 8, 1, 5, []string{"attn_q", "attn_output", "ffn_gate", "ffn_down"})
	require.NoError(t, err)
	ads := []cpuref.Adapter{{LoRA: l, Scale: 1}}
	g, err := NewGPU(gputest.Open(t), m, GPUOptions{Ctx: 64, LoRA: ads})
	require.NoError(t, err)
	defer g.Close()
	c, err := cpuref.New(m, 64, cpuref.WithLoRA(ads...))
	require.NoError(t, err)
	prompt := []int{1, 40, 41, 72, 101, 108}
	requireSameForward(t, c, g, prompt, 3)

	greedy := func() {
		c.Reset()
		g.Reset()
		lc, err := c.Prefill(prompt, false)
		require.NoError(t, err)
		_, err = g.Prefill(prompt, false)
		require.NoError(t, err)
		tok := cpuref.Argmax(lc)
		for range 4 {
			lc, err = c.Decode(tok)
			require.NoError(t, err)
			got, err := g.DecodeGreedy(tok)
			require.NoError(t, err)
			require.Equal(t, cpuref.Argmax(lc), got)
			tok = got
		}
	}
	greedy()
	for _, s := range []float32{3, 0} {
		require.NoError(t, c.SetLoRAScales([]float32{s}))
		require.NoError(t, g.SetLoRAScales([]float32{s}))
		greedy()
	}
	require.Equal(t, 12, g.GreedySteps())
	require.ErrorContains(t, g.SetLoRAScales([]float32{1, 1}), "2 LoRA scales for 1 adapters")

	plain, err := NewGPU(gputest.Open(t), m, GPUOptions{Ctx: 16})
	require.NoError(t, err)
	defer plain.Close()
	require.NoError(t, plain.SetLoRAScales(nil))
	require.ErrorContains(t, plain.SetLoRAScales([]float32{1}), "1 LoRA scales for 0 adapters")
}

// BenchmarkGPULoRADecode: decode steps of the built-in model on the test device without an
// adapter and with a synthetic adapter of rank 8, 16 and 64 on all seven projections of every
// layer; extra-bytes/token is the adapter's F16 factors, read once per token, and
// dispatches/token the recorded step's.
func BenchmarkGPULoRADecode(b *testing.B) {
	m, err := assets.Open()
	require.NoError(b, err)
	defer m.Close()
	for _, rank := range []int{0, 8, 16, 64} {
		b.Run(fmt.Sprintf("rank=%d", rank), func(b *testing.B) {
			var ads []cpuref.Adapter
			extra := 0
			if rank > 0 {
				l, err := model.SynthLoRA(m.Config, rank, float32(rank), 1, 1, nil)
				require.NoError(b, err)
				for _, p := range l.Targets {
					extra += len(p.A.Data) + len(p.B.Data)
				}
				ads = append(ads, cpuref.Adapter{LoRA: l, Scale: 1})
			}
			g, err := NewGPU(gputest.Open(b), m, GPUOptions{Ctx: 64, LoRA: ads})
			require.NoError(b, err)
			defer g.Close()
			benchloop.Decode(b, g)
			d, _, _ := g.DecodeStructure()
			b.ReportMetric(float64(extra), "extra-bytes/token")
			b.ReportMetric(float64(d), "dispatches/token")
		})
	}
}
