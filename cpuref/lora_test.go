package cpuref

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/bitgpu/bitgpu/model"
	"github.com/stretchr/testify/require"
)

// synthLoRA is a random adapter for synthModel's shapes on the given projections (nil: all).
func synthLoRA(t *testing.T, m *model.Model, rank int, alpha float32, seed uint64, targets []string) *model.LoRA {
	t.Helper()
	l, err := model.SynthLoRA(m.Config, rank, alpha, 1, seed, targets)
	require.NoError(t, err)
	return l
}

// TestLoRAScaleZeroIsBase: an adapter at scale 0 (or none) leaves every logit's bits as the base
// model's; at a non-zero scale it changes them, and SetLoRAScales switches between the two on
// one backend.
func TestLoRAScaleZeroIsBase(t *testing.T) {
	m := synthModel(t, synthOptions{typ: model.TypeI2_S, wScale: 0.05, seed: 3})
	base := runAll(t, m)
	l := synthLoRA(t, m, 8, 16, 1, nil)
	require.Equal(t, base, runAll(t, m, WithLoRA(Adapter{LoRA: l, Scale: 0})))
	with := runAll(t, m, WithLoRA(Adapter{LoRA: l, Scale: 1}))
	require.NotEqual(t, base, with)

	b, err := New(m, 0, WithLoRA(Adapter{LoRA: l, Scale: 1}))
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, 1, b.LoRAAdapters())
	require.NoError(t, b.SetLoRAScales([]float32{0}))
	got, err := b.Prefill(prompt, true)
	require.NoError(t, err)
	require.Equal(t, base, got)
	b.Reset()
	require.NoError(t, b.SetLoRAScales([]float32{1}))
	got, err = b.Prefill(prompt, true)
	require.NoError(t, err)
	require.Equal(t, with, got)
	require.ErrorContains(t, b.SetLoRAScales([]float32{1, 2}), "2 LoRA scales for 1 adapters")
	require.ErrorContains(t, b.SetLoRAScales([]float32{float32(math.NaN())}), "must be finite")
}

// TestApplyLoRAMatchesFloat64 checks AttachLoRA + ApplyLoRA against y + Σ_adapters
// s·B(A·x) computed in float64, for two adapters on attn_v (in 256, out 128), one of odd rank 3
// (padded to 4: the scaling must still be alpha/3). The tolerance is derived from the float32
// arithmetic: A·x is a 256-term dot (error ≤ γ_256 Σ|A_jk x_k|), the product by s and the
// r-term dot over B add γ_(r+1) relative to Σ|B_ij||s u_j|, the final sum one rounding of the
// result; bound = Σ_j |B_ij| |s| (γ_256+γ_5) Σ_k |A_jk x_k| + 2^-24 (|y_i|+|d_i|) with
// γ_n = n·2^-24/(1-n·2^-24), per element.
func TestApplyLoRAMatchesFloat64(t *testing.T) {
	m := synthModel(t, synthOptions{typ: model.TypeI2_S, wScale: 0.05, seed: 4})
	w, err := LoadWeights(m, m.Config, LMHeadF16)
	require.NoError(t, err)
	l1 := synthLoRA(t, m, 3, 6, 7, []string{"attn_v"})
	l2 := synthLoRA(t, m, 8, 4, 8, []string{"attn_v"})
	l2.RSLoRA = true
	ads := []Adapter{{LoRA: l1, Scale: 0.5}, {LoRA: l2, Scale: 2}}
	require.NoError(t, AttachLoRA(w, m.Config, ads))
	terms := w.Layers[1].V.LoRA
	require.Len(t, terms, 2)
	require.Equal(t, 4, terms[0].Pair.Rank(), "odd rank padded")
	require.Equal(t, 3, terms[0].Rank)

	const in, out, n = 256, 128, 3
	x := make([]float32, n*in)
	y := make([]float32, n*out)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)*0.37)) * 1.7
	}
	for i := range y {
		y[i] = float32(math.Cos(float64(i) * 0.11))
	}
	want, bound := make([]float64, len(y)), make([]float64, len(y))
	for i := range y {
		want[i] = float64(y[i])
	}
	gamma := func(k float64) float64 { u := math.Exp2(-24); return k * u / (1 - k*u) }
	f16 := func(tn *model.Tensor, i int) float64 {
		return float64(model.F16ToF32(binary.LittleEndian.Uint16(tn.Data[2*i:])))
	}
	for ai, a := range ads {
		pair := a.LoRA.Targets["blk.1.attn_v.weight"]
		r := pair.Rank()
		s := 0.5 * 6 / 3.0
		if ai == 1 {
			s = 2 * 4 / math.Sqrt(8)
		}
		for tk := range n {
			for i := range out {
				var d, mag float64
				for j := range r {
					var u, umag float64
					for k := range in {
						p := f16(pair.A, j*in+k) * float64(x[tk*in+k])
						u += p
						umag += math.Abs(p)
					}
					d += f16(pair.B, i*r+j) * s * u
					mag += math.Abs(f16(pair.B, i*r+j)*s) * umag
				}
				want[tk*out+i] += d
				bound[tk*out+i] += mag*(gamma(in)+gamma(float64(r+2))) + math.Exp2(-24)*(math.Abs(want[tk*out+i])+math.Abs(d))
			}
		}
	}
	got := append([]float32(nil), y...)
	require.NoError(t, ApplyLoRA(got, x, n, terms, AdapterScales(ads), make([]float32, 8), make([]float32, out)))
	for i := range got {
		require.InDelta(t, want[i], float64(got[i]), bound[i], "element %d", i)
	}
	// Scale 0 skips a term: only the second adapter's delta remains.
	only2 := append([]float32(nil), y...)
	require.NoError(t, ApplyLoRA(only2, x, n, terms, LoRAScales{0, 2}, make([]float32, 8), make([]float32, out)))
	require.NotEqual(t, got, only2)
	two := append([]float32(nil), y...)
	require.NoError(t, ApplyLoRA(two, x, n, terms[1:], LoRAScales{0, 2}, make([]float32, 8), make([]float32, out)))
	require.Equal(t, two, only2)
}

// TestAttachLoRAErrors: an adapter that does not fit the base is refused naming the file and
// the tensor.
func TestAttachLoRAErrors(t *testing.T) {
	m := synthModel(t, synthOptions{typ: model.TypeI2_S, wScale: 0.05, seed: 5})
	good := func() *model.LoRA { return synthLoRA(t, m, 4, 8, 1, []string{"attn_q"}) }
	for _, tc := range []struct {
		name string
		edit func(l *model.LoRA)
		want string
	}{
		{"layer out of range", func(l *model.LoRA) {
			l.Targets["blk.2.attn_q.weight"] = l.Targets["blk.0.attn_q.weight"]
		}, "tensor blk.2.attn_q.weight does not name a projection of this model"},
		{"not a projection", func(l *model.LoRA) {
			l.Targets["token_embd.weight"] = l.Targets["blk.0.attn_q.weight"]
		}, "tensor token_embd.weight does not name a projection"},
		{"A width", func(l *model.LoRA) {
			l.Targets["blk.0.ffn_down.weight"] = l.Targets["blk.0.attn_q.weight"]
		}, "blk.0.ffn_down.weight lora_a has shape [256 4], want [512, r]"},
		{"B height", func(l *model.LoRA) {
			p := l.Targets["blk.0.attn_q.weight"]
			l.Targets["blk.0.attn_k.weight"] = p
		}, "blk.0.attn_k.weight lora_b has shape [4 256], want [4, 128]"},
		{"rank mismatch", func(l *model.LoRA) {
			p := l.Targets["blk.0.attn_q.weight"]
			p.B = &model.Tensor{Name: "b", Type: model.TypeF16, Shape: []uint64{5, 256}, Data: make([]byte, 2*5*256)}
			l.Targets["blk.0.attn_q.weight"] = p
		}, "blk.0.attn_q.weight lora_b has shape [5 256], want [4, 256]"},
		{"type", func(l *model.LoRA) {
			p := l.Targets["blk.1.attn_q.weight"]
			p.A = &model.Tensor{Name: "a", Type: model.TypeF32, Shape: []uint64{256, 4}, Data: make([]byte, 4*256*4)}
			l.Targets["blk.1.attn_q.weight"] = p
		}, "blk.1.attn_q.weight lora_a is F32 [256 4], want an F16 matrix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := good()
			tc.edit(l)
			_, err := New(m, 0, WithLoRA(Adapter{LoRA: l, Scale: 1}))
			require.Error(t, err)
			require.Contains(t, err.Error(), "LoRA adapter "+l.Path)
			require.Contains(t, err.Error(), tc.want)
			require.False(t, strings.Contains(err.Error(), "\n"))
		})
	}
	_, err := New(m, 0, WithLoRA(Adapter{LoRA: good(), Scale: float32(math.Inf(1))}))
	require.ErrorContains(t, err, "scale +Inf must be finite")
}
