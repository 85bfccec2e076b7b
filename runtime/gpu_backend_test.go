//go:build cgo

package runtime

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpu"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/model"
)

// newBackendPair opens the GPU backend (on the test device) and the CPU reference for m, both with
// a cache of ctx tokens; the GPU backend is closed when the test ends.
func newBackendPair(t *testing.T, m *model.Model, ctx int) (*GPU, *cpuref.Backend) {
	g, err := NewGPU(gputest.Open(t), m, GPUOptions{Ctx: ctx})
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	c, err := cpuref.New(m, ctx)
	require.NoError(t, err)
	return g, c
}

func synthModel(t *testing.T, typ model.TensorType, edit func(*model.SynthOptions)) *model.Model {
	opt, err := model.SynthPreset("tiny")
	require.NoError(t, err)
	opt.Type = typ
	opt.Seed = 42
	if edit != nil {
		edit(&opt)
	}
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, model.WriteSynthetic(path, opt))
	m, err := model.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// requireLogitsEqual requires cpu and gpu to hold the same f32 bits, reporting the first row and
// index that differ and the row's NMSE.
func requireLogitsEqual(t *testing.T, cpu, gpu []float32, vocab int, what string) {
	t.Helper()
	require.Equal(t, len(cpu), len(gpu), what)
	for i := range cpu {
		if math.Float32bits(cpu[i]) != math.Float32bits(gpu[i]) {
			row := i / vocab
			c, g := cpu[row*vocab:(row+1)*vocab], gpu[row*vocab:(row+1)*vocab]
			var num, den float64
			for j := range c {
				d := float64(c[j]) - float64(g[j])
				num += d * d
				den += float64(c[j]) * float64(c[j])
			}
			t.Fatalf("%s: row %d logit %d: cpu %v gpu %v (row NMSE %.3g)", what, row, i%vocab, cpu[i], gpu[i], num/den)
		}
	}
}

// TestGPUMatchesCPUWholeModel: under the bit-exact contract (README, Numerics) the GPU's logits
// equal the CPU's bit for bit — prefill of a 17-token prompt (all rows), then 32 decode steps fed
// the greedy tokens — for I2_S and TQ2_0 weights.
func TestGPUMatchesCPUWholeModel(t *testing.T) {
	for _, typ := range []model.TensorType{model.TypeI2_S, model.TypeTQ2_0} {
		t.Run(typ.String(), func(t *testing.T) {
			m := synthModel(t, typ, nil)
			g, c := newBackendPair(t, m, 128)
			requireSameForward(t, c, g, []int{1, 40, 41, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33, 10, 5}, 32)
		})
	}
}

// requireSameForward prefills prompt on the CPU reference c and the GPU backend g, requiring the
// logits of every prompt row to be bit-identical, then feeds both the CPU's greedy token for steps
// decode steps, requiring bit-identical logits at each.
func requireSameForward(t *testing.T, c, g Backend, prompt []int, steps int) {
	t.Helper()
	vocab := c.Config().VocabSize
	lc, err := c.Prefill(prompt, true)
	require.NoError(t, err)
	lg, err := g.Prefill(prompt, true)
	require.NoError(t, err)
	requireLogitsEqual(t, lc, lg, vocab, "prefill")
	next := cpuref.Argmax(lc[len(lc)-vocab:])
	for step := 0; step < steps; step++ {
		lc, err = c.Decode(next)
		require.NoError(t, err)
		lg, err = g.Decode(next)
		require.NoError(t, err)
		requireLogitsEqual(t, lc, lg, vocab, fmt.Sprintf("decode step %d", step))
		next = cpuref.Argmax(lc)
	}
}

// TestGPUPrefillThenDecodeEqualsPrefill: the logits of a token must not depend on whether it went
// through the prefill (GEMM, tiled attention) or the recorded decode step (GEMV, split-K attention):
// bit for bit, as the contract makes both equal to the CPU's.
func TestGPUPrefillThenDecodeEqualsPrefill(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, nil)
	dev := gputest.Open(t)
	g, err := NewGPU(dev, m, GPUOptions{Ctx: 200})
	require.NoError(t, err)
	defer g.Close()
	vocab := m.Config.VocabSize
	tokens := make([]int, 80) // longer than one prefill chunk (MaxBatch)
	for i := range tokens {
		tokens[i] = (i*37 + 11) % vocab
	}
	all, err := g.Prefill(tokens, true)
	require.NoError(t, err)
	g.Reset()
	_, err = g.Prefill(tokens[:70], false)
	require.NoError(t, err)
	for i := 70; i < len(tokens); i++ {
		l, err := g.Decode(tokens[i])
		require.NoError(t, err)
		requireLogitsEqual(t, all[i*vocab:(i+1)*vocab], l, vocab, fmt.Sprintf("decode vs prefill, token %d", i))
	}
	_, err = g.Decode(0)
	require.NoError(t, err)
	require.Equal(t, 81, g.Pos())
	_, err = g.Prefill(make([]int, 200), false)
	require.ErrorContains(t, err, "context full")
	_, err = g.Decode(vocab)
	require.ErrorContains(t, err, "outside the vocabulary")
}

// TestGPUF16Baseline runs the full-precision baseline (the same trits times the same scales
// stored as F16, f32 activations) and compares it with the ternary model: they differ only by the
// int8 activation quantization, whose relative error per activation is at most 1/254 (half a step
// of 127 levels), so the logits' NMSE stays below (1/254)² times the layers' gain; 1e-2 allows a
// gain of 25 and still rejects a wrongly wired path (NMSE near 1). It must not be exactly equal
// either: that would mean the F16 path did not run. The F16 model itself gives the CPU's logits
// (cpuref and the fast cpu backend) bit for bit.
func TestGPUF16Baseline(t *testing.T) {
	tern := synthModel(t, model.TypeI2_S, nil)
	f16 := synthModel(t, model.TypeF16, nil)
	dev := gputest.Open(t)
	var logits [2][]float32
	for i, m := range []*model.Model{tern, f16} {
		g, err := NewGPU(dev, m, GPUOptions{Ctx: 64})
		require.NoError(t, err)
		prompt := []int{1, 72, 101, 108, 108, 111}
		logits[i], err = g.Prefill(prompt, true)
		require.NoError(t, err)
		l, err := g.Decode(33)
		require.NoError(t, err)
		logits[i] = append(logits[i], l...)
		require.NoError(t, g.Close())
	}
	var num, den float64
	for i := range logits[0] {
		d := float64(logits[0][i] - logits[1][i])
		num += d * d
		den += float64(logits[0][i]) * float64(logits[0][i])
	}
	require.Positive(t, num)
	require.Less(t, num/den, 1e-2)

	// F16 projections on the CPU (cpuref.FloatMatMul, and the fast cpu backend through it): the
	// GPU's order — RMSNorm or, without a sub-norm, the input as it is, unquantized, then the
	// canonical 32-lane dot product — so CPU = GPU bit for bit, with and without sub-norms.
	for _, fam := range []string{"2b4t", "llama158"} {
		m := synthModel(t, model.TypeF16, func(o *model.SynthOptions) { o.Family = fam })
		g, c := newBackendPair(t, m, 64)
		prompt := []int{1, 72, 101, 108, 108, 111, 32, 119}
		requireSameForward(t, c, g, prompt, 6)
		fast, err := cpu.New(m, 64, cpu.WithThreads(2))
		require.NoError(t, err)
		c.Reset()
		lc, err := c.Prefill(prompt, true)
		require.NoError(t, err)
		lf, err := fast.Prefill(prompt, true)
		require.NoError(t, err)
		requireLogitsEqual(t, lc, lf, m.Config.VocabSize, fam+": cpu vs cpuref")
		require.NoError(t, fast.Close())
	}
}

// TestGPUGreedyOnDevice: Generate with a greedy sampler takes the GPU's DecodeGreedy path (argmax
// on the device, only the id read back); its 32 tokens must equal the CPU's.
func TestGPUGreedyOnDevice(t *testing.T) {
	g, tokens, promptLen := generateOnBoth(t, 32, nil)
	var _ GreedyDecoder = g
	require.Equal(t, tokens[1], tokens[0])
	require.Equal(t, promptLen+31, g.Pos())
	require.Equal(t, 31, g.GreedySteps(), "every decode step took the on-device argmax")

	// A sampler that is not plain greedy reads the logits back instead.
	g2, _, _ := generateOnBoth(t, 8, &SamplerOptions{Temperature: 0.9, Seed: 1})
	require.Zero(t, g2.GreedySteps())
}

// TestGPUMemoryPlanMatchesAllocation: the plan NewGPU checks against the device's heaps (and
// `-v` prints) must be what it allocates — measured as the bytes of the buffers alive on the
// device after NewGPU minus before, for ternary and F16 projections and two cache sizes.
func TestGPUMemoryPlanMatchesAllocation(t *testing.T) {
	dev := gputest.Open(t)
	for _, typ := range []model.TensorType{model.TypeI2_S, model.TypeF16} {
		m := synthModel(t, typ, nil)
		for _, ctx := range []int{64, 200} {
			before := dev.Live()
			inUse0, _ := dev.MemoryInUse()
			g, err := NewGPU(dev, m, GPUOptions{Ctx: ctx})
			require.NoError(t, err)
			after := dev.Live()
			inUse1, _ := dev.MemoryInUse()
			plan := PlanMemory(m.Config, ctx, typ == model.TypeF16)
			require.Equal(t, plan, g.Plan())
			require.Equal(t, plan.Total(), after.BufferBytes-before.BufferBytes, "%s ctx %d: plan %s", typ, ctx, plan)
			// The allocator's own count (sizes rounded up to the driver's requirements, plus the
			// recorded step's 64-byte step block) is at least that.
			require.GreaterOrEqual(t, inUse1-inUse0, plan.Total())
			require.NoError(t, g.Close())
			require.Equal(t, before, dev.Live(), "Close releases everything NewGPU made")
		}
	}
}

// TestNewGPUFailureFreesEverything: a NewGPU that fails late, after most weights are on the
// device, must release every buffer and kernel it made on the caller's device.
func TestNewGPUFailureFreesEverything(t *testing.T) {
	dev := gputest.Open(t)
	cases := []struct {
		name string
		typ  model.TensorType
		edit func(m *model.Model)
		want string
	}{
		{"missing last tensor", model.TypeI2_S, func(m *model.Model) { delete(m.Tensors, "blk.1.ffn_down.weight") }, "missing tensor blk.1.ffn_down.weight"},
		{"wrong shape after upload", model.TypeI2_S, func(m *model.Model) {
			m.Tensors["blk.1.ffn_down.weight"] = m.Tensors["blk.1.ffn_up.weight"]
		}, "tensor blk.1.ffn_down.weight: shape"},
		{"missing f16 tensor", model.TypeF16, func(m *model.Model) { delete(m.Tensors, "blk.1.ffn_down.weight") }, "missing tensor blk.1.ffn_down.weight"},
		{"short f16 tensor", model.TypeF16, func(m *model.Model) {
			w := *m.Tensors["blk.1.ffn_down.weight"]
			w.Data = w.Data[:len(w.Data)-2]
			m.Tensors["blk.1.ffn_down.weight"] = &w
		}, "bytes, want"},
		{"mixed projection types", model.TypeI2_S, func(m *model.Model) {
			f := synthModel(t, model.TypeF16, nil)
			m.Tensors["blk.1.ffn_down.weight"] = f.Tensors["blk.1.ffn_down.weight"]
		}, "every projection ternary"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := synthModel(t, c.typ, nil)
			c.edit(m)
			before := dev.Live()
			inUse0, _ := dev.MemoryInUse()
			g, err := NewGPU(dev, m, GPUOptions{Ctx: 64})
			require.ErrorContains(t, err, c.want)
			require.Nil(t, g)
			require.Equal(t, before, dev.Live())
			inUse1, _ := dev.MemoryInUse()
			require.Equal(t, inUse0, inUse1, "bytes in use")
		})
	}
}

// TestInvalidTokenChangesNothing: a token outside the vocabulary — here the last of a prompt
// longer than one prefill chunk — is refused by both backends before any state changes: both
// keep their position, give the same error, and go on to the same logits.
func TestInvalidTokenChangesNothing(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, nil)
	g, c := newBackendPair(t, m, 200)
	vocab := m.Config.VocabSize
	start := []int{1, 72, 101}
	bad := make([]int, 80)
	for i := range bad {
		bad[i] = (i*37 + 11) % vocab
	}
	bad[79] = vocab
	for _, b := range []Backend{g, c} {
		_, err := b.Prefill(start, false)
		require.NoError(t, err)
	}
	for _, toks := range [][]int{bad, {-1}, {vocab}} {
		_, errG := g.Prefill(toks, false)
		_, errC := c.Prefill(toks, false)
		require.Error(t, errG)
		require.Error(t, errC)
		require.Equal(t, strings.TrimPrefix(errC.Error(), "cpuref: "), errG.Error())
		require.Equal(t, len(start), g.Pos())
		require.Equal(t, len(start), c.Pos())
	}
	_, errC := c.Decode(-1)
	require.Error(t, errC)
	_, err := g.DecodeGreedy(-1)
	require.Error(t, err)
	require.Equal(t, strings.TrimPrefix(errC.Error(), "cpuref: "), err.Error())
	require.Equal(t, len(start), g.Pos())
	require.Equal(t, len(start), c.Pos())
	lg, err := g.Decode(33)
	require.NoError(t, err)
	lc, err := c.Decode(33)
	require.NoError(t, err)
	requireLogitsEqual(t, lc, lg, vocab, "decode after the refused tokens")
}

// generateOnBoth generates n tokens after "Hello world" on the GPU and on the CPU reference of the
// tiny synthetic model, each with a fresh sampler from opts (nil: greedy), and returns the GPU
// backend, the two token lists (GPU first) and the prompt's length in tokens.
func generateOnBoth(t *testing.T, n int, opts *SamplerOptions) (*GPU, [2][]int, int) {
	m := synthModel(t, model.TypeI2_S, nil)
	g, c := newBackendPair(t, m, 64)
	prompt := EncodePrompt(m.Tokenizer, "Hello world")
	var tokens [2][]int
	for i, b := range []Backend{g, c} {
		var smp *Sampler
		if opts != nil {
			var err error
			smp, err = NewSampler(*opts)
			require.NoError(t, err)
		}
		st, err := Generate(b, m.Tokenizer, prompt, GenerateOptions{MaxTokens: n, Context: 64, IgnoreEOS: true, Sampler: smp})
		require.NoError(t, err)
		require.Len(t, st.Tokens, n)
		tokens[i] = st.Tokens
	}
	return g, tokens, len(prompt)
}

// TestGPUOutputScalesAndUntiedOutput gives the synthetic model what `bitnet`-architecture files
// carry — a separate F32 output scale next to some projections (`*.scale`) — and an untied F16
// output.weight that differs from token_embd, and requires the GPU's logits to equal the CPU's
// bit for bit. A GPU that ignored either would give other logits.
func TestGPUOutputScalesAndUntiedOutput(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, nil)
	for name, v := range map[string]float32{"blk.0.attn_q.scale": 0.75, "blk.1.attn_v.scale": 1.25, "blk.0.ffn_up.scale": 0.875, "blk.1.ffn_down.scale": 1.625} {
		data := make([]byte, 4)
		binary.LittleEndian.PutUint32(data, math.Float32bits(v))
		m.Tensors[name] = &model.Tensor{Name: name, Type: model.TypeF32, Shape: []uint64{1}, Data: data}
	}
	embd := m.Tensors["token_embd.weight"]
	rng := rand.New(rand.NewPCG(21, 22))
	out := make([]float32, embd.Elements())
	for i := range out {
		out[i] = float32(rng.NormFloat64() * 0.05)
	}
	m.Tensors["output.weight"] = &model.Tensor{Name: "output.weight", Type: model.TypeF16, Shape: embd.Shape, Data: model.EncodeF16(out)}
	m.Config.TiedEmbedding = false

	g, c := newBackendPair(t, m, 64)
	prompt := []int{1, 72, 101, 108, 108, 111}
	lc, err := c.Prefill(prompt, true)
	require.NoError(t, err)
	lg, err := g.Prefill(prompt, true)
	require.NoError(t, err)
	requireLogitsEqual(t, lc, lg, m.Config.VocabSize, "prefill")
	lc, err = c.Decode(33)
	require.NoError(t, err)
	lg, err = g.Decode(33)
	require.NoError(t, err)
	requireLogitsEqual(t, lc, lg, m.Config.VocabSize, "decode")

	// Each extra on its own changes the logits at the same position (the decode step after the
	// prompt): so both backends honour it, or the equality above would have failed.
	for what, edit := range map[string]func(*model.Model){
		"without the *.scale tensors": func(x *model.Model) {
			delete(x.Tensors, "blk.0.attn_q.scale")
			delete(x.Tensors, "blk.1.ffn_down.scale")
		},
		"with the tied embedding": func(x *model.Model) { x.Config.TiedEmbedding = true },
	} {
		other := *m
		other.Tensors = maps.Clone(m.Tensors)
		edit(&other)
		co, err := cpuref.New(&other, 64)
		require.NoError(t, err)
		_, err = co.Prefill(prompt, false)
		require.NoError(t, err)
		lo, err := co.Decode(33)
		require.NoError(t, err)
		require.NotEqual(t, lc, lo, "the model %s gives the same decode logits", what)
	}
}

// TestGPUSeededSamplingMatchesCPU: with equal logits, a seeded sampler picks the same tokens on
// both backends, so `--seed` reproduces text across devices (temperature 0.9, top-k 40, top-p
// 0.95, 48 tokens: enough draws that a single differing logit near a sampling boundary would
// show).
func TestGPUSeededSamplingMatchesCPU(t *testing.T) {
	_, tokens, _ := generateOnBoth(t, 48, &SamplerOptions{Temperature: 0.9, TopK: 40, TopP: 0.95, Seed: 7})
	require.Equal(t, tokens[1], tokens[0])
}

// TestGPUMatchesCPUFamilies: every synthetic family layout (model.SynthFamilies) — the 1bitLLM
// `bitnet` layout (SiLU, separate output) and the llama-arch one (no sub-norms, so o_proj and
// down_proj quantize un-normed inputs; NORM RoPE; separate output) — gives the CPU reference's
// logits bit for bit in prefill and decode.
func TestGPUMatchesCPUFamilies(t *testing.T) {
	for _, fam := range model.SynthFamilies {
		t.Run(fam, func(t *testing.T) {
			m := synthModel(t, model.TypeI2_S, func(o *model.SynthOptions) { o.Family = fam; o.Layers = 1 })
			require.Equal(t, fam != "llama158", m.Config.SubNorms)
			g, c := newBackendPair(t, m, 64)
			requireSameForward(t, c, g, []int{1, 40, 41, 72, 101, 108, 108, 111, 32}, 4)
			require.Equal(t, PlanMemory(m.Config, 64, false), g.Plan())
		})
	}
}

// TestGPUWithoutHostVisibleVRAM: with device-local memory treated as not host-visible (a discrete
// GPU without resizable BAR: weights, KV cache and scratch uploaded and read through staging) the
// whole model still gives the CPU's logits bit for bit.
func TestGPUWithoutHostVisibleVRAM(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, func(o *model.SynthOptions) { o.Layers = 1 })
	g, err := NewGPU(gputest.Open(t, "host-visible-vram"), m, GPUOptions{Ctx: 64})
	require.NoError(t, err)
	defer g.Close()
	c, err := cpuref.New(m, 64)
	require.NoError(t, err)
	requireSameForward(t, c, g, []int{1, 40, 41, 72, 101}, 3)
}

// TestGPUProfileGreedy: with profiling on, the on-device greedy step is timed too — every kernel
// of the step and the argmax once per decoded token — and gives the unprofiled step's tokens.
func TestGPUProfileGreedy(t *testing.T) {
	requireProfiledStep(t, 5, "argmax", func(g *GPU, tok int) ([]int, int, error) {
		next, err := g.DecodeGreedy(tok)
		return []int{next}, next, err
	})
}

// requireProfiledStep runs steps decode steps of a one-layer model through step (which returns
// the ids to compare and the next token), without and with profiling, and requires the same ids
// from both and a profile with one label and one attention per step, every time positive.
func requireProfiledStep(t *testing.T, steps int, label string, step func(g *GPU, tok int) (ids []int, next int, err error)) {
	t.Helper()
	m := synthModel(t, model.TypeI2_S, func(o *model.SynthOptions) { o.Layers = 1 })
	dev := gputest.Open(t)
	var runs [2][]int
	for i, profile := range []bool{false, true} {
		g, err := NewGPU(dev, m, GPUOptions{Ctx: 32})
		require.NoError(t, err)
		if profile {
			require.NoError(t, g.EnableProfile())
		}
		_, err = g.Prefill([]int{1, 2, 3}, false)
		require.NoError(t, err)
		tok := 4
		for range steps {
			var ids []int
			ids, tok, err = step(g, tok)
			require.NoError(t, err)
			runs[i] = append(runs[i], ids...)
		}
		if profile {
			prof := g.Profile()
			require.NotEmpty(t, prof)
			labels := map[string]int{}
			for _, k := range prof {
				labels[k.Label] = k.Calls
				require.Greater(t, k.NS, 0.0, k.Label)
			}
			require.Equal(t, 1, labels[label], "one %s per decode step", label)
			require.Equal(t, 1, labels["attention"], "one attention per layer and step")
		}
		require.NoError(t, g.Close())
	}
	require.Equal(t, runs[0], runs[1])
}
