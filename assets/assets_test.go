package assets_test

import (
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpuref"
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

// pplTolerance bounds |bitgpu/PyTorch − 1| for the same windows of the same tokens; logitSpread
// is the RMS over positions of the logits' standard deviation across the vocabulary (measured on
// the first window), predictions the number of predictions averaged.
//
// Derivation (not fitted to the measured −0.014 %: every constant below follows from the
// arithmetic). What is the same on both sides: the trits and per-tensor scales (absmean of the
// same bf16 weights), the embedding (bf16 is exact in f16), K/V rounded to f16 at the same point,
// the f64 RoPE table. What differs is only f32 rounding: PyTorch's BitLinear sums K ≤ 768
// rounded products (q/s)·(t·w) in a blocked order where bitgpu sums the integers exactly and
// scales once; RMSNorm's Σx² is summed in another order; 127/m and ÷s are divisions where
// bitgpu multiplies by rcp; rsqrt, exp and softmax's sums are other implementations. Each is a
// relative difference of a few ulps, the summations of about √K ulps (round-to-nearest errors
// add as a random walk), so an activation differs by δ ≈ √768 ≈ 28 ulps, taken as δ = 2⁻¹⁹.
//
// Two paths lead from δ to the NLL. (1) Smoothly: the logits move by δ·|z| ≈ 10⁻⁵, far below
// (2). (2) Through the int8 activation rounding: q = round(x·s) flips by one step where x·s lies
// within |x·s|·δ of a half-integer, for a fraction p = 2·E|q|·δ of the activations (E|q| ≈ 127/4
// for a token whose largest activation is ~3.2 standard deviations out, so RMS(q) ≈ 127/3.2).
// A flipped input moves its projection's output by one step of one column: with pK random-sign
// flips among K inputs the output moves by √p/RMS(q) of itself. Over the 7 projections of each
// of the 4 layers (independent, so √28), doubled for ReLU² (the only op that doubles a relative
// change; the norms remove scale), the final hidden state moves by ρ = 2·√28·√p/RMS(q), and
// each logit by about ρ·logitSpread around its mean. A prediction's NLL, −z_y + logsumexp(z),
// then changes by at most √2 times that (standard deviation), with either sign: flips are as
// likely up as down. The mean over N predictions has standard deviation √2·ρ·logitSpread/√N,
// and the tolerance is 4 of those (a false failure has probability ~6·10⁻⁵). A wrong forward (a
// transposed matrix, a missing sub-norm, the wrong RoPE pairs) moves the perplexity by tens of
// percent.
func pplTolerance(logitSpread float64, predictions int) float64 {
	const (
		delta  = 1.0 / (1 << 19) // relative difference of an activation, ≈ 32 ulps
		meanQ  = 127.0 / 4       // E|q|
		rmsQ   = 127.0 / 3.2     // RMS(q)
		layers = 4
	)
	p := 2 * meanQ * delta
	rho := 2 * math.Sqrt(7*layers) * math.Sqrt(p) / rmsQ
	return 4 * math.Sqrt2 * rho * logitSpread / math.Sqrt(float64(predictions))
}

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
	requirePyTorchPPL(t, m, sliceFile, sliceWindows, pytorchSlicePPL)
}

// requirePyTorchPPL measures the perplexity of file (windows windows of sliceWindow predictions)
// on cpuref with the F16 head (PyTorch's) and opts, and requires it within pplTolerance of
// PyTorch's figure want for the same text.
func requirePyTorchPPL(t *testing.T, m *model.Model, file string, windows int, want float64, opts ...cpuref.Option) {
	t.Helper()
	toks := m.Tokenizer.Encode(string(mustRead(t, file)), false)
	require.Equal(t, windows, runtime.Windows(len(toks), sliceWindow), "%d tokens", len(toks))
	b, err := cpuref.New(m, sliceWindow, append([]cpuref.Option{cpuref.WithLMHead(cpuref.LMHeadF16)}, opts...)...)
	require.NoError(t, err)
	defer b.Close()
	r, err := runtime.Perplexity(b, toks, sliceWindow, 0)
	require.NoError(t, err)
	// The logits' spread across the vocabulary, RMS over the first window's positions.
	b.Reset()
	logits, err := b.Prefill(toks[:sliceWindow], true)
	require.NoError(t, err)
	vocab := m.Config.VocabSize
	var spread2 float64
	for i := 0; i < sliceWindow; i++ {
		row := logits[i*vocab : (i+1)*vocab]
		var sum, sum2 float64
		for _, z := range row {
			sum += float64(z)
			sum2 += float64(z) * float64(z)
		}
		mean := sum / float64(vocab)
		spread2 += sum2/float64(vocab) - mean*mean
	}
	tol := pplTolerance(math.Sqrt(spread2/sliceWindow), r.Predictions)
	t.Logf("bitgpu cpuref ppl %.4f, PyTorch %.4f on %s (%d predictions, %+.4f%%, tolerance %.4f%%)",
		r.PPL, want, file, r.Predictions, 100*(r.PPL/want-1), 100*tol)
	require.Less(t, r.PPL, want*(1+tol))
	require.Greater(t, r.PPL, want*(1-tol))
}

// The committed LoRA adapter (lora/sqlite-r8, trained by scripts/train_lora.py on the SQLite
// documentation with the base frozen) and PyTorch's perplexities of loraSliceFile, the first
// paragraphs of its held-out text, under the base alone and with the adapter (the script's
// --eval-only, F16 head, the adapter's factors rounded to f16 as bitgpu loads them).
const (
	loraDir           = "lora/sqlite-r8"
	loraSliceFile     = "testdata/sqlite-val-slice.txt"
	loraSliceWindows  = 8
	pytorchLoRABase   = 93.9485
	pytorchLoRAPlusAd = 47.1565
)

// TestLoRAPerplexityMatchesPyTorch: `perplexity --lora` on the committed adapter agrees with
// PyTorch within pplTolerance, and so does the base on the same text. The tolerance's derivation
// holds with the adapter: its terms are f32 dot products of 256 to 768 products (PyTorch sums
// them in another order), a relative difference of the adapted outputs within the δ = 2⁻¹⁹
// assumed for the base, and they add no int8 rounding points.
func TestLoRAPerplexityMatchesPyTorch(t *testing.T) {
	m, err := assets.Open()
	require.NoError(t, err)
	requirePyTorchPPL(t, m, loraSliceFile, loraSliceWindows, pytorchLoRABase)
	l, err := model.OpenLoRA(loraDir)
	require.NoError(t, err)
	require.NoError(t, l.Check(m))
	require.Len(t, l.Targets, 7*m.Config.Layers)
	requirePyTorchPPL(t, m, loraSliceFile, loraSliceWindows, pytorchLoRAPlusAd, cpuref.WithLoRA(cpuref.Adapter{LoRA: l, Scale: 1}))
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
	b, err := cpuref.New(m, 64, cpuref.WithLMHead(cpuref.LMHeadF16)) // PyTorch's head
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

func mustRead(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// TestLoRAPEFTGGUFRoundTrip: the committed PEFT adapter and its GGUF form (`convert-lora`'s
// model.WriteLoRAGGUF) give the same logits bit for bit.
func TestLoRAPEFTGGUFRoundTrip(t *testing.T) {
	m, err := assets.Open()
	require.NoError(t, err)
	peft, err := model.OpenLoRA(loraDir)
	require.NoError(t, err)
	require.NoError(t, peft.Check(m))
	path := t.TempDir() + "/sqlite-r8.gguf"
	require.NoError(t, model.WriteLoRAGGUF(path, peft))
	gguf, err := model.OpenLoRA(path)
	require.NoError(t, err)
	require.NoError(t, gguf.Check(m))
	toks := promptIDs(m, "SQLite stores the database in a single file")
	var rows [][]float32
	for _, l := range []*model.LoRA{peft, gguf} {
		b, err := cpuref.New(m, 64, cpuref.WithLoRA(cpuref.Adapter{LoRA: l, Scale: 1}))
		require.NoError(t, err)
		logits, err := b.Prefill(toks, true)
		require.NoError(t, err)
		rows = append(rows, logits)
	}
	require.Equal(t, rows[0], rows[1])
	base, err := cpuref.New(m, 64)
	require.NoError(t, err)
	logits, err := base.Prefill(toks, true)
	require.NoError(t, err)
	require.NotEqual(t, logits, rows[0])
}
