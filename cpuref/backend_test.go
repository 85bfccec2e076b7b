package cpuref

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/bitgpu/bitgpu/model"
	"github.com/stretchr/testify/require"
)

// synthOptions shapes a tiny in-memory BitNet model for the forward tests.
type synthOptions struct {
	typ       model.TensorType // encoding of every projection
	act       model.Activation
	wScale    float32 // weight scale of every projection (every block for TQ)
	extra     float32 // when non-zero, every projection gets a blk.N.*.scale tensor of this value
	zeroTrits bool    // all projection weights 0
	seed      uint64
}

// synthModel builds a 2-layer model: dim 256, 4 query heads and 2 KV heads of 64, FFN 512,
// vocabulary 50, context 16, random trits, an F16 embedding with entries in [-1, 1) and F32 norm
// weights in [0.5, 1.5). The same seed gives the same trits whatever the encoding.
func synthModel(t *testing.T, o synthOptions) *model.Model {
	t.Helper()
	cfg := model.Config{
		Arch: model.ArchBitNetB158, VocabSize: 50, Dim: 256, Layers: 2, Heads: 4, KVHeads: 2,
		HeadDim: 64, FFNDim: 512, RoPEBase: 10000, RoPEMode: model.RoPENeox, RMSEps: 1e-5,
		ContextLength: 16, Act: o.act, TiedEmbedding: true, SubNorms: true, BOS: -1, EOS: -1, EOT: -1,
	}
	if cfg.Act == "" {
		cfg.Act = model.ActReLU2
	}
	r := rand.New(rand.NewPCG(o.seed, 99))
	ts := map[string]*model.Tensor{}
	floats := func(n int, lo, hi float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = lo + (hi-lo)*r.Float32()
		}
		return v
	}
	add := func(name string, typ model.TensorType, shape []uint64, data []byte) {
		ts[name] = &model.Tensor{Name: name, Type: typ, Shape: shape, Data: data}
	}
	add("token_embd.weight", model.TypeF16, []uint64{256, 50}, model.EncodeF16(floats(256*50, -1, 1)))
	add("output_norm.weight", model.TypeF32, []uint64{256}, model.EncodeF32(floats(256, 0.5, 1.5)))
	for l := range cfg.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		for _, nm := range []struct {
			name string
			n    int
		}{{"attn_norm", 256}, {"attn_sub_norm", 256}, {"ffn_norm", 256}, {"ffn_sub_norm", 512}} {
			add(p+nm.name+".weight", model.TypeF32, []uint64{uint64(nm.n)}, model.EncodeF32(floats(nm.n, 0.5, 1.5)))
		}
		for _, pr := range []struct {
			name       string
			cols, rows int
		}{{"attn_q", 256, 256}, {"attn_k", 256, 128}, {"attn_v", 256, 128}, {"attn_output", 256, 256},
			{"ffn_gate", 256, 512}, {"ffn_up", 256, 512}, {"ffn_down", 512, 256}} {
			trits := randTrits(r, pr.cols*pr.rows)
			if o.zeroTrits {
				clear(trits)
			}
			tt := ternaryTensor(t, p+pr.name+".weight", o.typ, trits, pr.cols, pr.rows, o.wScale)
			ts[tt.Name] = tt
			if o.extra != 0 {
				add(p+pr.name+".scale", model.TypeF32, []uint64{1}, model.EncodeF32([]float32{o.extra}))
			}
		}
	}
	return &model.Model{Config: cfg, Tensors: ts}
}

var prompt = []int{1, 7, 42, 3, 49, 0, 12}

// runAll prefills prompt with all logits on a fresh backend (New with opts).
func runAll(t *testing.T, m *model.Model, opts ...Option) []float32 {
	t.Helper()
	b, err := New(m, 0, opts...)
	require.NoError(t, err)
	defer b.Close()
	logits, err := b.Prefill(prompt, true)
	require.NoError(t, err)
	require.Len(t, logits, len(prompt)*50)
	require.Equal(t, len(prompt), b.Pos())
	return logits
}

func TestPrefillThenDecodeEqualsPrefill(t *testing.T) {
	// Every token goes through the same per-token arithmetic in prefill and decode (per-token
	// quantization, rows computed independently, attention over positions 0..pos), so the logits
	// must match exactly, not within a tolerance.
	for _, act := range []model.Activation{model.ActReLU2, model.ActSiLU} {
		m := synthModel(t, synthOptions{typ: model.TypeI2_S, act: act, wScale: 0.0625, seed: 1})
		all := runAll(t, m)

		b, err := New(m, 0)
		require.NoError(t, err)
		got, err := b.Prefill(prompt[:3], true)
		require.NoError(t, err)
		for _, tok := range prompt[3:] {
			l, err := b.Decode(tok)
			require.NoError(t, err)
			got = append(got, l...)
		}
		require.Equal(t, all, got, "act %s", act)

		// Last-token-only prefill is the last row; Reset replays identically.
		b.Reset()
		require.Equal(t, 0, b.Pos())
		last, err := b.Prefill(prompt, false)
		require.NoError(t, err)
		require.Equal(t, all[(len(prompt)-1)*50:], last)
		require.NoError(t, b.Close())
	}
}

func TestForwardDeterministicAcrossGOMAXPROCS(t *testing.T) {
	m := synthModel(t, synthOptions{typ: model.TypeTQ2_0, wScale: 0.0625, seed: 2})
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(1)
	ref := runAll(t, m)
	for _, procs := range []int{2, 3} {
		runtime.GOMAXPROCS(procs)
		require.Equal(t, ref, runAll(t, m), "GOMAXPROCS=%d", procs)
	}
}

func TestForwardSameAcrossEncodings(t *testing.T) {
	// Same trits and the power-of-two scale 1/16 everywhere: each BitLinear output is exact in
	// every encoding (see TestTernaryMatVecSameAcrossEncodings), so whole-model logits agree bit
	// for bit.
	var ref []float32
	for _, typ := range []model.TensorType{model.TypeI2_S, model.TypeTQ2_0, model.TypeTQ1_0} {
		got := runAll(t, synthModel(t, synthOptions{typ: typ, wScale: 0.0625, seed: 3}))
		if ref == nil {
			ref = got
			continue
		}
		require.Equal(t, ref, got, "type %d", typ)
	}
}

func TestForwardExtraScaleTensor(t *testing.T) {
	// Weight scale 0.5 with a separate *.scale of 2 gives ((acc*0.5)/s)*2; weight scale 1 with
	// none gives (acc*1)/s. Multiplying by 0.5 and 2 is exact, so the two models agree exactly.
	a := runAll(t, synthModel(t, synthOptions{typ: model.TypeI2_S, wScale: 0.5, extra: 2, seed: 4}))
	b := runAll(t, synthModel(t, synthOptions{typ: model.TypeI2_S, wScale: 1, seed: 4}))
	require.Equal(t, b, a)
}

func TestForwardZeroWeightsIsResidualPath(t *testing.T) {
	// With every trit 0 each block adds exactly 0, so x_L is the embedding row and the logits
	// are output_norm(embedding) · E^T computed with the public ops: Logits for the f16 head,
	// QuantizeActivations and LogitsQ8 on the re-quantized matrix for the q8_0 head.
	m := synthModel(t, synthOptions{typ: model.TypeTQ1_0, wScale: 1, zeroTrits: true, seed: 5})
	got := runAll(t, m, WithLMHead(LMHeadF16))
	gotQ8 := runAll(t, m, WithLMHead(LMHeadQ8_0))
	e := m.Tensors["token_embd.weight"]
	e8, err := OutputMatrix(e, LMHeadQ8_0)
	require.NoError(t, err)
	w := make([]float32, 256)
	require.NoError(t, model.FloatRow(m.Tensors["output_norm.weight"], 0, w))
	for i, tok := range prompt {
		x := make([]float32, 256)
		require.NoError(t, Embedding(x, e, tok))
		require.NoError(t, RMSNorm(x, x, w, 1e-5))
		want := make([]float32, 50)
		require.NoError(t, Logits(want, x, e))
		require.Equal(t, want, got[i*50:(i+1)*50], "token %d", i)
		q := make([]int8, 256)
		s, err := QuantizeActivations(q, x)
		require.NoError(t, err)
		require.NoError(t, LogitsQ8(want, q, s, e8))
		require.Equal(t, want, gotQ8[i*50:(i+1)*50], "q8_0 head, token %d", i)
	}
}

func TestPrefillErrors(t *testing.T) {
	m := synthModel(t, synthOptions{typ: model.TypeI2_S, wScale: 0.0625, seed: 6})
	b, err := New(m, 8)
	require.NoError(t, err)
	_, err = b.Prefill(nil, false)
	require.ErrorContains(t, err, "no tokens")
	_, err = b.Prefill([]int{1, 50}, false)
	require.ErrorContains(t, err, "token 50 (index 1) outside the vocabulary [0, 50)")
	_, err = b.Decode(-1)
	require.ErrorContains(t, err, "token -1")
	_, err = b.Prefill(make([]int, 6), false)
	require.NoError(t, err)
	_, err = b.Prefill(make([]int, 3), false)
	require.ErrorContains(t, err, "3 tokens at position 6 exceed the context length 8")
	require.Equal(t, 6, b.Pos())
	require.NoError(t, b.Close())
	_, err = b.Decode(1)
	require.ErrorContains(t, err, "closed")
}

func TestNewErrors(t *testing.T) {
	m := synthModel(t, synthOptions{typ: model.TypeI2_S, wScale: 0.0625, seed: 7})
	delete(m.Tensors, "blk.1.ffn_up.weight")
	_, err := New(m, 0)
	require.ErrorContains(t, err, "missing tensor blk.1.ffn_up.weight")

	m = synthModel(t, synthOptions{typ: model.TypeI2_S, wScale: 0.0625, seed: 7})
	m.Tensors["blk.0.attn_k.weight"].Shape = []uint64{128, 256}
	_, err = New(m, 0)
	require.ErrorContains(t, err, "tensor blk.0.attn_k.weight: want shape [256, 128], found [128 256]")

	m = synthModel(t, synthOptions{typ: model.TypeI2_S, wScale: 0.0625, seed: 7})
	m.Tensors["blk.0.ffn_norm.weight"].Shape = []uint64{255}
	_, err = New(m, 0)
	require.ErrorContains(t, err, "tensor blk.0.ffn_norm.weight: want shape [256], found [255]")

	m = synthModel(t, synthOptions{typ: model.TypeI2_S, wScale: 0.0625, seed: 7})
	m.Config.KVHeads = 3
	_, err = New(m, 0)
	require.ErrorContains(t, err, "multiple of KVHeads 3")

	m.Config.KVHeads, m.Config.Act = 2, "gelu"
	_, err = New(m, 0)
	require.ErrorContains(t, err, `gate activation "gelu"`)

	_, err = New(nil, 0)
	require.Error(t, err)
}
