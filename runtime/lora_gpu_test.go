//go:build cgo

package runtime

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/model"
)

// TestGPULoRAMatchesCPU: with LoRA adapters the GPU's logits equal cpuref's bit for bit —
// prefill (the f16 GEMM path of the terms) and decode — for every family (sub-norms or not,
// ReLU² or SiLU), for adapters on every projection, on attention only (the FFN stays fused) and
// on the FFN only (q/k/v stay fused with RoPE), two adapters at once (one of odd rank), and after
// SetLoRAScales changes the scales (the steps re-recorded), including switching one off. The
// memory plan still equals what the device allocated.
func TestGPULoRAMatchesCPU(t *testing.T) {
	prompt := []int{1, 40, 41, 72, 101, 108, 108, 111, 32, 119, 111, 114}
	for _, fam := range model.SynthFamilies {
		for _, targets := range [][]string{nil, {"attn_q", "attn_v", "attn_output"}, {"ffn_gate", "ffn_up", "ffn_down"}} {
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
				requireSameForward(t, c, g, prompt, 6)
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
