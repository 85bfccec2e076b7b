package cpu

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// TestLoRAParity: with adapters on every projection (two of them, one of odd rank, one on the
// attention projections only), the fast backend gives cpuref's logits bit for bit over a
// prefill and decode steps, for every family and kernel at 1 and 2 threads; after
// SetLoRAScales (a per-request change) both still agree, and a sequence made by NewSequence
// keeps its own scales.
func TestLoRAParity(t *testing.T) {
	for _, fam := range model.SynthFamilies {
		t.Run(fam, func(t *testing.T) {
			m := synth(t, model.SynthOptions{Family: fam, Vocab: 300, Dim: 256, Layers: 2, Heads: 4, KVHeads: 2,
				FFN: 512, Ctx: 64, Type: model.TypeTQ2_0, Seed: 13})
			l1, err := model.SynthLoRA(m.Config, 5, 10, 1, 1, nil)
			require.NoError(t, err)
			l2, err := model.SynthLoRA(m.Config, 8, 16, 1, 2, []string{"attn_q", "attn_k", "attn_v", "attn_output"})
			require.NoError(t, err)
			ads := []cpuref.Adapter{{LoRA: l1, Scale: 1}, {LoRA: l2, Scale: 0.5}}
			for _, scales := range [][]float32{{1, 0.5}, {0, 2}} {
				ref, err := cpuref.New(m, 0, cpuref.WithLoRA(ads...))
				require.NoError(t, err)
				require.NoError(t, ref.SetLoRAScales(scales))
				want := run(t, ref, m.Config.VocabSize, prompt, 6)
				require.NoError(t, ref.Close())
				for _, k := range kernels() {
					for _, threads := range []int{1, 2} {
						b, err := New(m, 0, WithKernel(k), WithThreads(threads), WithLoRA(ads...))
						require.NoError(t, err)
						require.Equal(t, 2, b.LoRAAdapters())
						seq, err := b.NewSequence()
						require.NoError(t, err)
						require.NoError(t, b.SetLoRAScales(scales))
						msg := fmt.Sprintf("scales %v, kernel %s, %d threads", scales, k, threads)
						requireBits(t, want, run(t, b, m.Config.VocabSize, prompt, 6), msg)
						if scales[0] != 1 || scales[1] != 0.5 { // seq kept New's scales
							require.NotEqual(t, want[:len(prompt)*m.Config.VocabSize], run(t, seq, m.Config.VocabSize, prompt, 0), msg)
						}
						require.NoError(t, seq.Close())
						require.NoError(t, b.Close())
					}
				}
			}
		})
	}
}
