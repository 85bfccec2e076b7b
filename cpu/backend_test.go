package cpu

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// run prefills prompt with all logits, then decodes steps tokens (each the greedy choice of the
// previous logits), returning every logit produced in order. It works on any backend.
func run(t *testing.T, b interface {
	Prefill([]int, bool) ([]float32, error)
	Decode(int) ([]float32, error)
}, vocab int, prompt []int, steps int) []float32 {
	t.Helper()
	all, err := b.Prefill(prompt, true)
	require.NoError(t, err)
	last := all[len(all)-vocab:]
	for range steps {
		l, err := b.Decode(cpuref.Argmax(last))
		require.NoError(t, err)
		all = append(all, l...)
		last = l
	}
	return all
}

// requireBits compares float32 slices bit for bit (require.Equal would accept NaN != NaN as
// unequal and -0 == +0 as equal; bits catch both).
func requireBits(t *testing.T, want, got []float32, msg string) {
	t.Helper()
	require.Equal(t, len(want), len(got), msg)
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			require.Failf(t, "logits differ", "%s: element %d: cpuref %v (%#x), cpu %v (%#x)", msg, i, want[i], math.Float32bits(want[i]), got[i], math.Float32bits(got[i]))
		}
	}
}

// checkModel runs m through cpuref and through the fast backend with every kernel at 1 and 2
// threads, both with LM head h, and requires the same logits bit for bit: prefill of the whole
// prompt (all rows), then steps greedy decode steps.
func checkModel(t *testing.T, m *model.Model, prompt []int, steps int, h cpuref.LMHead) {
	t.Helper()
	ref, err := cpuref.New(m, 0, cpuref.WithLMHead(h))
	require.NoError(t, err)
	want := run(t, ref, m.Config.VocabSize, prompt, steps)
	require.NoError(t, ref.Close())
	for _, k := range kernels() {
		for _, threads := range []int{1, 2} {
			b, err := New(m, 0, WithKernel(k), WithThreads(threads), WithLMHead(h))
			require.NoError(t, err)
			got := run(t, b, m.Config.VocabSize, prompt, steps)
			requireBits(t, want, got, fmt.Sprintf("kernel %s, %d threads", k, threads))
			require.Equal(t, len(prompt)+steps, b.Pos())
			require.NoError(t, b.Close())
		}
	}
}

// synth writes and opens a synthetic model.
func synth(t *testing.T, o model.SynthOptions) *model.Model {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, model.WriteSynthetic(path, o))
	m, err := model.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

var prompt = []int{1, 7, 42, 3, 290, 0, 12, 100, 255}

// TestSyntheticParity: every family (2b4t: sub-norms, ReLU², tied; onebit: SiLU, output.weight;
// llama158: no sub-norms, NORM RoPE) in every ternary type, TQ with per-block scales too, gives
// cpuref's logits bit for bit over a prefill and 16 decode steps, with the F16 and the Q8_0 head.
func TestSyntheticParity(t *testing.T) {
	for _, fam := range model.SynthFamilies {
		for _, typ := range []model.TensorType{model.TypeI2_S, model.TypeTQ2_0, model.TypeTQ1_0} {
			for _, blocks := range []bool{false, true} {
				if blocks && typ == model.TypeI2_S {
					continue
				}
				t.Run(fmt.Sprintf("%s/%v/blocks=%v", fam, typ, blocks), func(t *testing.T) {
					m := synth(t, model.SynthOptions{Family: fam, Vocab: 300, Dim: 256, Layers: 2, Heads: 4, KVHeads: 2,
						FFN: 512, Ctx: 64, Type: typ, BlockScales: blocks, Seed: 11})
					for _, h := range []cpuref.LMHead{cpuref.LMHeadF16, cpuref.LMHeadQ8_0} {
						checkModel(t, m, prompt, 16, h)
					}
				})
			}
		}
	}
}

// TestLongPrefillParity crosses the 64-token prefill chunk and several 32-key attention chunks,
// on a model with a head size that is not a multiple of 8 (the canonical q·k tail).
func TestLongPrefillParity(t *testing.T) {
	m := synth(t, model.SynthOptions{Vocab: 300, Dim: 256, Layers: 1, Heads: 4, KVHeads: 1, FFN: 256, Ctx: 160, Seed: 5})
	long := make([]int, 140)
	for i := range long {
		long[i] = (i*37 + 11) % 300
	}
	checkModel(t, m, long, 3, "")
}

// TestBuiltinParity: the built-in model (assets), a real prompt's worth of tokens, 16 greedy
// steps with the default LM head, and 4 with each head named.
func TestBuiltinParity(t *testing.T) {
	m, err := assets.Open()
	require.NoError(t, err)
	toks := []int{1, 400, 37, 512, 9, 600, 222, 71, 33, 5, 700, 18}
	checkModel(t, m, toks, 16, "")
	for _, h := range []cpuref.LMHead{cpuref.LMHeadF16, cpuref.LMHeadQ8_0} {
		ref, err := cpuref.New(m, 0, cpuref.WithLMHead(h))
		require.NoError(t, err)
		want := run(t, ref, m.Config.VocabSize, toks, 4)
		b, err := New(m, 0, WithLMHead(h))
		require.NoError(t, err)
		require.Equal(t, ref.LMHead(), b.LMHead())
		requireBits(t, want, run(t, b, m.Config.VocabSize, toks, 4), string(h)+" head")
		require.NoError(t, b.Close())
	}
}

// TestBackendErrors: bad calls are errors that leave Pos alone; a closed backend refuses work.
func TestBackendErrors(t *testing.T) {
	m := synth(t, model.SynthOptions{Vocab: 300, Dim: 128, Layers: 1, Heads: 2, KVHeads: 1, FFN: 256, Ctx: 8, Seed: 1})
	b, err := New(m, 0)
	require.NoError(t, err)
	_, err = b.Prefill(nil, false)
	require.Error(t, err)
	_, err = b.Prefill([]int{300}, false)
	require.ErrorContains(t, err, "outside the vocabulary")
	_, err = b.Prefill(make([]int, 9), false)
	require.ErrorContains(t, err, "exceed the context length")
	require.Equal(t, 0, b.Pos())
	_, err = New(m, 0, WithKernel("nope"))
	require.ErrorContains(t, err, "unknown kernel")
	require.NoError(t, b.Close())
	_, err = b.Decode(1)
	require.ErrorContains(t, err, "closed")
}
