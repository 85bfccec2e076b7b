package assets_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// sliceFile is the first paragraphs of the model's validation text (the last 5% of the corpus,
// never trained on), cut to hold sliceWindows perplexity windows of sliceWindow predictions.
const (
	sliceFile    = "testdata/val-slice.txt"
	sliceWindow  = 256
	sliceWindows = 4
)

// pytorchSlicePPL is the perplexity of sliceFile under the trained checkpoint as PyTorch computes
// it: `scripts/train_qat.py --eval CHECKPOINT --eval-text assets/testdata/val-slice.txt` (windows
// of 256 predictions from an empty context, bf16 weights quantized on the fly exactly as the
// I2_S file holds them, K/V rounded to f16). pytorchValPPL is the same over the whole validation
// text (metrics in bitgpu-tiny-metrics.json).
const (
	pytorchSlicePPL = 59.5646
	pytorchValPPL   = 55.1854
)

// pplTolerance bounds |bitgpu/PyTorch - 1| for the same windows of the same tokens.
//
// Derivation. Both sides compute the same function of the same integers: the trits and the
// per-tensor scales are identical (absmean of the same bf16 weights), the embedding's bf16
// values are exact in f16, and K/V are rounded to f16 at the same point. What differs is f32
// arithmetic order (PyTorch's blocked matmuls and reductions versus cpuref's index-order sums),
// a few ulps on every value. Such a difference flips an int8 activation only when the scaled
// value lies within a few ulps of a rounding boundary (a few in 10^4 activations), and a flip
// moves that input by one step, max|x|/127: a small, zero-mean change of single logits that
// averages out over the 1024 predictions, so the mean NLL agrees far better than 1e-3 nats
// (measured: -0.014% on this slice, -0.001% on the whole validation text). The bound is the 0.5%
// agreement the project promises between backends; a wrong forward (a transposed matrix, a
// missing sub-norm, the wrong RoPE pairs) moves the perplexity by tens of percent or more.
const pplTolerance = 0.005

func TestOpen(t *testing.T) {
	m, err := assets.Open()
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, assets.Name+".gguf", m.Path)
	c := m.Config
	require.Equal(t, model.Config{
		Arch: model.ArchBitNetB158, VocabSize: 768, Dim: 256, Layers: 4, Heads: 4, KVHeads: 2, HeadDim: 64,
		FFNDim: 768, RoPEBase: 500000, RoPEDim: 64, RoPEMode: model.RoPENeox, RMSEps: 1e-5, ContextLength: 256,
		Act: model.ActReLU2, TiedEmbedding: true, SubNorms: true, BOS: 765, EOS: 766, EOT: 767, AddBOS: true,
		ChatTemplate: c.ChatTemplate,
	}, c)
	require.Equal(t, model.ChatBitNet, model.DetectChatFormat(c.ChatTemplate))
	require.Equal(t, model.TypeI2_S, m.Tensors["blk.3.ffn_down.weight"].Type)
	require.Equal(t, model.TypeF16, m.Tensors["token_embd.weight"].Type)
	require.Equal(t, assets.Size(), len(mustRead(t, "bitgpu-tiny.gguf")))

	text := "The Python interpreter reads a file, line by line.\n\nIt is <|eot_id|> 42!"
	ids := m.Tokenizer.Encode(text, true)
	require.Equal(t, text, m.Tokenizer.Decode(ids))
	require.Contains(t, ids, 767)

	// Every call returns a model of its own.
	m2, err := assets.Open()
	require.NoError(t, err)
	require.NotSame(t, m, m2)
}

// TestPerplexityMatchesPyTorch measures the perplexity of the committed validation slice with
// the CPU backend and requires it within pplTolerance of PyTorch's figure for the same text.
func TestPerplexityMatchesPyTorch(t *testing.T) {
	m, err := assets.Open()
	require.NoError(t, err)
	toks := m.Tokenizer.Encode(string(mustRead(t, sliceFile)), false)
	require.Equal(t, sliceWindows, runtime.Windows(len(toks), sliceWindow), "%d tokens", len(toks))
	b, err := cpuref.New(m, sliceWindow)
	require.NoError(t, err)
	defer b.Close()
	r, err := runtime.Perplexity(b, toks, sliceWindow, 0)
	require.NoError(t, err)
	t.Logf("bitgpu cpu ppl %.4f, PyTorch %.4f on %s (%d predictions); PyTorch on the whole validation text %.4f",
		r.PPL, pytorchSlicePPL, sliceFile, r.Predictions, pytorchValPPL)
	require.Less(t, r.PPL, pytorchSlicePPL*(1+pplTolerance))
	require.Greater(t, r.PPL, pytorchSlicePPL*(1-pplTolerance))
}

// greedy resets b, prefills prompt and returns the n tokens chosen by argmax.
func greedy(t *testing.T, b runtime.Backend, prompt []int, n int) []int {
	b.Reset()
	logits, err := b.Prefill(prompt, false)
	require.NoError(t, err)
	var out []int
	for len(out) < n {
		id := cpuref.Argmax(logits)
		out = append(out, id)
		if len(out) < n {
			logits, err = b.Decode(id)
			require.NoError(t, err)
		}
	}
	return out
}

// greedyPrompt and greedyWant: the built-in model's greedy continuation on the CPU backend. It is
// also the start of PyTorch's greedy continuation of the same prompt, recorded by the training
// script in bitgpu-tiny-metrics.json (checked in TestGreedyDeterministic).
const (
	greedyPrompt = "The Python interpreter"
	greedyTokens = 24
	greedyWant   = " to there is a synt to the rovent to the rovent to the sy"
)

func promptIDs(m *model.Model, text string) []int {
	ids := m.Tokenizer.Encode(text, false)
	if m.Tokenizer.AddBOS() {
		ids = append([]int{m.Tokenizer.BOS()}, ids...)
	}
	return ids
}

func TestGreedyDeterministic(t *testing.T) {
	m, err := assets.Open()
	require.NoError(t, err)
	b, err := cpuref.New(m, 64)
	require.NoError(t, err)
	defer b.Close()
	prompt := promptIDs(m, greedyPrompt)
	first := greedy(t, b, prompt, greedyTokens)
	require.Equal(t, first, greedy(t, b, prompt, greedyTokens))
	require.Equal(t, greedyWant, m.Tokenizer.Decode(first))

	var metrics struct {
		Samples map[string]string `json:"samples_greedy"`
	}
	require.NoError(t, json.Unmarshal(mustRead(t, "bitgpu-tiny-metrics.json"), &metrics))
	require.True(t, strings.HasPrefix(metrics.Samples[greedyPrompt], greedyPrompt+greedyWant),
		"PyTorch's greedy continuation %q", metrics.Samples[greedyPrompt])
}

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

func mustRead(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}
