package cpuref

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// TestFamiliesRun opens each synthetic family (model.SynthFamilies) and requires the forward to
// run, prefill-then-decode to equal all-prefill bit for bit, and the llama158 layout (no
// sub-norms) to quantize o_proj's and down_proj's inputs un-normed: its logits differ from the
// same file with unit sub-norms added, which the backend would otherwise have ignored.
func TestFamiliesRun(t *testing.T) {
	for _, fam := range model.SynthFamilies {
		t.Run(fam, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), fam+".gguf")
			require.NoError(t, model.WriteSynthetic(path, model.SynthOptions{Family: fam, Vocab: 300, Dim: 128, Layers: 2, Heads: 4, KVHeads: 2, FFN: 256, Ctx: 32, Seed: 3}))
			m, err := model.Open(path)
			require.NoError(t, err)
			defer m.Close()
			_, hasSub := m.Tensors["blk.0.attn_sub_norm.weight"]
			require.Equal(t, fam != "llama158", hasSub)
			require.Equal(t, fam != "llama158", m.Config.SubNorms)
			_, hasOut := m.Tensors["output.weight"]
			require.Equal(t, fam != "2b4t", hasOut)

			toks := []int{5, 77, 200, 3, 9}
			b, err := New(m, 0)
			require.NoError(t, err)
			all, err := b.Prefill(toks, true)
			require.NoError(t, err)
			b.Reset()
			head, err := b.Prefill(toks[:2], true)
			require.NoError(t, err)
			step := head
			for _, tk := range toks[2:] {
				l, err := b.Decode(tk)
				require.NoError(t, err)
				step = append(step, l...)
			}
			require.Equal(t, all, step)

			if fam != "llama158" {
				return
			}
			// The same weights with sub-norms of ones: a different forward (RMSNorm rescales).
			withSub := *m
			withSub.Config.SubNorms = true
			withSub.Tensors = map[string]*model.Tensor{}
			for k, v := range m.Tensors {
				withSub.Tensors[k] = v
			}
			for l := range m.Config.Layers {
				for _, n := range []struct {
					name string
					d    int
				}{{"attn_sub_norm", m.Config.Dim}, {"ffn_sub_norm", m.Config.FFNDim}} {
					ones := make([]float32, n.d)
					for i := range ones {
						ones[i] = 1
					}
					name := "blk." + string(rune('0'+l)) + "." + n.name + ".weight"
					withSub.Tensors[name] = &model.Tensor{Name: name, Type: model.TypeF32, Shape: []uint64{uint64(n.d)}, Data: model.EncodeF32(ones)}
				}
			}
			b2, err := New(&withSub, 0)
			require.NoError(t, err)
			other, err := b2.Prefill(toks, true)
			require.NoError(t, err)
			require.NotEqual(t, all, other)
		})
	}
}
