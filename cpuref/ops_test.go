package cpuref

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/bitgpu/bitgpu/model"
	"github.com/stretchr/testify/require"
)

func TestRMSNorm(t *testing.T) {
	// mean(x^2) = 4, eps 0: inv = 1/2 exactly.
	x := []float32{2, -2, 2, -2}
	dst := make([]float32, 4)
	require.NoError(t, RMSNorm(dst, x, []float32{1, 2, 0.5, -1}, 0))
	require.Equal(t, []float32{1, -2, 0.5, 1}, dst)

	// eps is added inside the root: mean 1 + eps 3 = 4, inv = 1/2. In place.
	y := []float32{1, -1, 1, 1}
	require.NoError(t, RMSNorm(y, y, []float32{1, 1, 1, 1}, 3))
	require.Equal(t, []float32{0.5, -0.5, 0.5, 0.5}, y)

	require.ErrorContains(t, RMSNorm(dst, x, []float32{1}, 0), "lengths")
}

func TestQuantizeActivationsTies(t *testing.T) {
	// max|x| = 127 (the last element), so s = 1 exactly and x*s is x: the halves are ties and
	// round to the even neighbour.
	x := []float32{0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 127}
	q := make([]int8, len(x))
	s, err := QuantizeActivations(q, x)
	require.NoError(t, err)
	require.Equal(t, float32(1), s)
	require.Equal(t, []int8{0, 2, 2, 0, -2, -2, 4, 127}, q)
}

func TestQuantizeActivationsNegativeMaxLast(t *testing.T) {
	// max|x| = 4 in the last element: s = 127/4 = 31.75 (exact). 1*31.75 -> 32;
	// -2*31.75 = -63.5 is a tie -> -64 (even); -4*31.75 = -127.
	x := []float32{1, -2, 0, -4}
	q := make([]int8, 4)
	s, err := QuantizeActivations(q, x)
	require.NoError(t, err)
	require.Equal(t, float32(31.75), s)
	require.Equal(t, []int8{32, -64, 0, -127}, q)
}

func TestQuantizeActivationsZeros(t *testing.T) {
	q := []int8{9, 9, 9}
	s, err := QuantizeActivations(q, make([]float32, 3))
	require.NoError(t, err)
	require.Equal(t, float32(127)/float32(1e-5), s)
	require.Equal(t, []int8{0, 0, 0}, q)

	_, err = QuantizeActivations(q, make([]float32, 4))
	require.ErrorContains(t, err, "dst has 3 elements, x 4")
}

// ternaryTensor encodes trits ([rows][cols]) as typ with weight scale w (all blocks) into a
// tensor of GGUF shape [cols, rows].
func ternaryTensor(t *testing.T, name string, typ model.TensorType, trits []int8, cols, rows int, w float32) *model.Tensor {
	t.Helper()
	var data []byte
	var err error
	switch typ {
	case model.TypeI2_S:
		data, err = model.EncodeI2S(trits, w)
	case model.TypeTQ1_0, model.TypeTQ2_0:
		scales := make([]float32, len(trits)/model.TQBlockElems)
		for i := range scales {
			scales[i] = w
		}
		if typ == model.TypeTQ1_0 {
			data, err = model.EncodeTQ1_0(trits, scales)
		} else {
			data, err = model.EncodeTQ2_0(trits, scales)
		}
	}
	require.NoError(t, err)
	return &model.Tensor{Name: name, Type: typ, Shape: []uint64{uint64(cols), uint64(rows)}, Data: data}
}

func matrix(t *testing.T, tt *model.Tensor) *model.TernaryMatrix {
	t.Helper()
	m, err := model.NewTernaryMatrix(tt)
	require.NoError(t, err)
	return m
}

func TestTernaryMatVecHand(t *testing.T) {
	// 2 rows x 128 cols, I2_S scale 0.5, activation scale s = 2.
	// Row 0: t[0]=1, t[1]=-1, t[127]=1 -> acc = 10 - 20 + (-5) = -15 -> y = -15*0.5/2 = -3.75.
	// Row 1: t[0..2]=1                  -> acc = 10 + 20 + 7 = 37   -> y = 37*0.5/2 = 9.25.
	trits := make([]int8, 256)
	trits[0], trits[1], trits[127] = 1, -1, 1
	trits[128], trits[129], trits[130] = 1, 1, 1
	q := make([]int8, 128)
	q[0], q[1], q[2], q[127] = 10, 20, 7, -5
	w := matrix(t, ternaryTensor(t, "w", model.TypeI2_S, trits, 128, 2, 0.5))
	dst := make([]float32, 2)
	require.NoError(t, TernaryMatVec(dst, w, q, 2))
	require.Equal(t, []float32{-3.75, 9.25}, dst)

	require.ErrorContains(t, TernaryMatVec(dst[:1], w, q, 2), "w is [2 rows, 128 cols]")
	require.ErrorContains(t, TernaryMatVec(dst, w, q[:5], 2), "want q 128")
}

func TestTernaryMatVecTQBlockScales(t *testing.T) {
	// 1 row x 512 cols in TQ2_0 with block scales 1 and 0.5; s = 4.
	// Block 0: t[0]=1, t[5]=1 with q 1, 2 -> acc0 = 3; block 1: t[300]=-1 with q 2 -> acc1 = -2.
	// y = (3*1 + (-2)*0.5) / 4 = 0.5.
	trits := make([]int8, 512)
	trits[0], trits[5], trits[300] = 1, 1, -1
	data, err := model.EncodeTQ2_0(trits, []float32{1, 0.5})
	require.NoError(t, err)
	w := matrix(t, &model.Tensor{Name: "w", Type: model.TypeTQ2_0, Shape: []uint64{512, 1}, Data: data})
	q := make([]int8, 512)
	q[0], q[5], q[300], q[301] = 1, 2, 2, 100
	dst := make([]float32, 1)
	require.NoError(t, TernaryMatVec(dst, w, q, 4))
	require.Equal(t, []float32{0.5}, dst)
}

func randTrits(r *rand.Rand, n int) []int8 {
	t := make([]int8, n)
	for i := range t {
		t[i] = int8(r.IntN(3)) - 1
	}
	return t
}

func randInt8(r *rand.Rand, n int) []int8 {
	q := make([]int8, n)
	for i := range q {
		q[i] = int8(r.IntN(256) - 128)
	}
	return q
}

func TestTernaryMatVecSameAcrossEncodings(t *testing.T) {
	// The same trits with the same scale 0.25 in every block: every encoding forms one run of
	// equal scales, so all three compute (float32(acc)*w) * Rcp32(s) and agree bit for bit.
	r := rand.New(rand.NewPCG(1, 2))
	const rows, cols = 7, 512
	trits := randTrits(r, rows*cols)
	q := randInt8(r, cols)
	var results [][]float32
	for _, typ := range []model.TensorType{model.TypeI2_S, model.TypeTQ2_0, model.TypeTQ1_0} {
		w := matrix(t, ternaryTensor(t, "w", typ, trits, cols, rows, 0.25))
		dst := make([]float32, rows)
		require.NoError(t, TernaryMatVec(dst, w, q, 3))
		results = append(results, dst)
	}
	// Independent check of row 0: the plain integer dot product.
	var acc int32
	for j := range cols {
		acc += int32(trits[j]) * int32(q[j])
	}
	require.Equal(t, float32(float32(acc)*0.25)*Rcp32(3), results[0][0])
	require.Equal(t, results[0], results[1])
	require.Equal(t, results[0], results[2])
}

func TestTernaryMatMulEqualsMatVecs(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const rows, cols, n = 9, 256, 3
	w := matrix(t, ternaryTensor(t, "w", model.TypeTQ1_0, randTrits(r, rows*cols), cols, rows, 0.3))
	q := randInt8(r, n*cols)
	s := []float32{1.5, 7, 0.1}
	all := make([]float32, n*rows)
	require.NoError(t, TernaryMatMul(all, w, q, s))
	for tok := range n {
		one := make([]float32, rows)
		require.NoError(t, TernaryMatVec(one, w, q[tok*cols:(tok+1)*cols], s[tok]))
		require.Equal(t, one, all[tok*rows:(tok+1)*rows])
	}
}

func TestRoPEIdentityAtZero(t *testing.T) {
	for _, mode := range []model.RoPEMode{model.RoPENeox, model.RoPENorm} {
		x := []float32{1, 2, 3, 4, 5, 6, 7, 8}
		require.NoError(t, RoPE(x, 2, 4, 4, 0, 10000, mode))
		require.Equal(t, []float32{1, 2, 3, 4, 5, 6, 7, 8}, x)
	}
}

// ropeTol bounds the error of one rotated element: cos and sin are f32-rounded (relative 2^-24
// each), then a*c and b*s are rounded and subtracted (3 more roundings). With |a|, |b| <= 4 and
// |c|, |s| <= 1 that is at most 5 * 2^-24 * 8 ≈ 2.4e-6 against the float64 value.
const ropeTol = 2.4e-6

func TestRoPEPos1Neox(t *testing.T) {
	// headDim 6, ropeDim 4, base 10000, pos 1: theta_0 = 1, theta_1 = 10000^(-2/4) = 0.01.
	// NEOX pairs (x0, x2) by theta_0 and (x1, x3) by theta_1; x4, x5 are past ropeDim.
	x := []float32{1, 2, 3, 4, 5, 6}
	require.NoError(t, RoPE(x, 1, 6, 4, 1, 10000, model.RoPENeox))
	c0, s0 := 0.5403023058681398, 0.8414709848078965   // cos(1), sin(1)
	c1, s1 := 0.9999500004166653, 0.009999833334166664 // cos(0.01), sin(0.01)
	want := []float64{1*c0 - 3*s0, 2*c1 - 4*s1, 1*s0 + 3*c0, 2*s1 + 4*c1, 5, 6}
	for i := range want {
		require.InDelta(t, want[i], x[i], ropeTol, "element %d", i)
	}
	require.Equal(t, []float32{5, 6}, x[4:])
}

func TestRoPEPos1Norm(t *testing.T) {
	// NORM pairs (x0, x1) by theta_0 = 1 and (x2, x3) by theta_1 = 0.01.
	x := []float32{1, 2, 3, 4}
	require.NoError(t, RoPE(x, 1, 4, 4, 1, 10000, model.RoPENorm))
	c0, s0 := 0.5403023058681398, 0.8414709848078965
	c1, s1 := 0.9999500004166653, 0.009999833334166664
	want := []float64{1*c0 - 2*s0, 1*s0 + 2*c0, 3*c1 - 4*s1, 3*s1 + 4*c1}
	for i := range want {
		require.InDelta(t, want[i], x[i], ropeTol, "element %d", i)
	}
}

func TestRoPEErrors(t *testing.T) {
	x := make([]float32, 8)
	require.ErrorContains(t, RoPE(x, 3, 4, 4, 0, 1e4, model.RoPENeox), "want heads 3 * headDim 4")
	require.ErrorContains(t, RoPE(x, 2, 4, 3, 0, 1e4, model.RoPENeox), "ropeDim 3")
	require.ErrorContains(t, RoPE(x, 2, 4, 4, -1, 1e4, model.RoPENeox), "negative position")
	require.ErrorContains(t, RoPE(x, 2, 4, 4, 0, 1e4, model.RoPEMode(7)), "unknown mode")
}

// f16Row converts a row to f16 bits.
func f16Row(x ...float32) []uint16 {
	out := make([]uint16, len(x))
	for i, v := range x {
		out[i] = model.F32ToF16(v)
	}
	return out
}

func TestAttentionSinglePositionGQA(t *testing.T) {
	// 4 query heads share 2 KV heads (group 2): heads 0,1 read KV head 0 and heads 2,3 KV head 1.
	// With one position the softmax weight is exactly 1, so each head's output is its V row.
	const heads, kvHeads, hd = 4, 2, 2
	k := f16Row(1, 0, 0, 1)
	v := f16Row(10, 20, -3, 4)
	q := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	dst := make([]float32, heads*hd)
	require.NoError(t, Attention(dst, q, k, v, 0, heads, kvHeads, hd))
	require.Equal(t, []float32{10, 20, 10, 20, -3, 4, -3, 4}, dst)
}

func TestAttentionTwoPositions(t *testing.T) {
	// headDim 2, q = (sqrt 2, 0), k_0 = (0, 0), k_1 = (1, 0): scores 0 and sqrt2*1/sqrt2 = 1, so
	// p = (1/(1+e), e/(1+e)) = (0.2689414, 0.7310586). v_0 = (1, 0), v_1 = (0, 2):
	// out = (0.2689414, 1.4621172). Tolerance: the f32 score is 1 within 2 ulp, exp and the
	// normalisation add a few more 2^-24 relative errors; 1e-6 covers them with margin.
	k := f16Row(0, 0, 1, 0)
	v := f16Row(1, 0, 0, 2)
	q := []float32{float32(math.Sqrt2), 0}
	dst := make([]float32, 2)
	require.NoError(t, Attention(dst, q, k, v, 1, 1, 1, 2))
	require.InDelta(t, 0.2689414213699951, dst[0], 1e-6)
	require.InDelta(t, 1.4621171572600098, dst[1], 1e-6)
}

func TestAttentionCausal(t *testing.T) {
	// Position 2 holds huge keys and values; attending at pos 1 must not see them.
	k := f16Row(0, 0, 1, 0, 1000, 1000)
	v := f16Row(1, 0, 0, 2, 5000, 5000)
	q := []float32{float32(math.Sqrt2), 0}
	got := make([]float32, 2)
	require.NoError(t, Attention(got, q, k, v, 1, 1, 1, 2))
	want := make([]float32, 2)
	require.NoError(t, Attention(want, q, k[:4], v[:4], 1, 1, 1, 2))
	require.Equal(t, want, got)
	require.Less(t, got[1], float32(2))

	require.ErrorContains(t, Attention(got, q, k[:4], v[:4], 2, 1, 1, 2), "do not hold positions 0..2")
	require.ErrorContains(t, Attention(make([]float32, 6), make([]float32, 6), k, v, 0, 3, 2, 2), "multiple of kvHeads")
}

func TestStoreKVRoundsToF16(t *testing.T) {
	cache := make([]uint16, 4)
	// 1 + 2^-12 is below half an f16 ulp (2^-11) of 1: it stores as 1. 3 is exact.
	require.NoError(t, StoreKV(cache, 1, []float32{1 + 1.0/4096, 3}))
	require.Equal(t, []uint16{0, 0, 0x3C00, 0x4200}, cache)
	require.ErrorContains(t, StoreKV(cache, 2, []float32{1, 2}), "no row 2")
}

func TestGLUs(t *testing.T) {
	dst := make([]float32, 4)
	require.NoError(t, ReLU2GLU(dst, []float32{-1, 0, 2, 3}, []float32{5, 5, 0.5, -1}))
	require.Equal(t, []float32{0, 0, 2, -9}, dst)

	// silu(0) = 0, silu(1) = 1/(1+e^-1) = 0.7310586, silu(-1)*2 = -2/(1+e) = -0.5378828.
	// Tolerance: one f32-rounded exp plus three f32 operations, a few 2^-24 relative: 1e-7.
	d3 := make([]float32, 3)
	require.NoError(t, SiLUGLU(d3, []float32{0, 1, -1}, []float32{3, 1, 2}))
	require.Equal(t, float32(0), d3[0])
	require.InDelta(t, 0.7310585786300049, d3[1], 1e-7)
	require.InDelta(t, -0.5378828427399902, d3[2], 1e-7)

	require.ErrorContains(t, ReLU2GLU(dst, dst[:3], dst), "lengths")
	require.ErrorContains(t, SiLUGLU(dst, dst[:3], dst), "lengths")
}

func TestAdd(t *testing.T) {
	a := []float32{1, 2, 3}
	require.NoError(t, Add(a, a, []float32{0.5, -2, 1}))
	require.Equal(t, []float32{1.5, 0, 4}, a)
	require.Error(t, Add(a, a, []float32{1}))
}

func TestEmbedding(t *testing.T) {
	// 3 tokens x dim 32; row 1 is 0.5 * (0, 1, ..., 31), exact in F16, F32 and Q8_0 (Q8_0:
	// max 15.5 -> d = 15.5/127, not exact in f16, so compare Q8_0 with its own dequantization).
	const dim, vocab = 32, 3
	vals := make([]float32, dim*vocab)
	for j := range dim {
		vals[dim+j] = 0.5 * float32(j)
	}
	for _, typ := range []model.TensorType{model.TypeF32, model.TypeF16} {
		data := model.EncodeF32(vals)
		if typ == model.TypeF16 {
			data = model.EncodeF16(vals)
		}
		e := &model.Tensor{Name: "token_embd.weight", Type: typ, Shape: []uint64{dim, vocab}, Data: data}
		dst := make([]float32, dim)
		require.NoError(t, Embedding(dst, e, 1))
		require.Equal(t, vals[dim:2*dim], dst)
		require.ErrorContains(t, Embedding(dst, e, 3), "token 3 outside the vocabulary [0, 3)")
	}
	// Q8_0 row 1: d = f16(15.5/127); element j = d * round(0.5j / d).
	q8, err := model.EncodeQ8_0(vals)
	require.NoError(t, err)
	e := &model.Tensor{Name: "token_embd.weight", Type: model.TypeQ8_0, Shape: []uint64{dim, vocab}, Data: q8}
	dst := make([]float32, dim)
	require.NoError(t, Embedding(dst, e, 1))
	d := model.RoundF16(15.5 / 127)
	for j := range dim {
		require.Equal(t, d*float32(math.Round(float64(0.5*float32(j)/(15.5/127)))), dst[j], "element %d", j)
	}
}

func TestLogitsAndArgmax(t *testing.T) {
	// E rows (1, 2), (0.5, -1), (0, 0); x = (2, 3): logits = (8, -2, 0).
	e := &model.Tensor{Name: "token_embd.weight", Type: model.TypeF16, Shape: []uint64{2, 3},
		Data: model.EncodeF16([]float32{1, 2, 0.5, -1, 0, 0})}
	dst := make([]float32, 3)
	require.NoError(t, Logits(dst, []float32{2, 3}, e))
	require.Equal(t, []float32{8, -2, 0}, dst)
	require.Equal(t, 0, Argmax(dst))

	e32 := &model.Tensor{Name: "output.weight", Type: model.TypeF32, Shape: []uint64{2, 3},
		Data: model.EncodeF32([]float32{1, 2, 0.5, -1, 0, 0})}
	require.NoError(t, Logits(dst, []float32{2, 3}, e32))
	require.Equal(t, []float32{8, -2, 0}, dst)
	require.ErrorContains(t, Logits(dst[:2], []float32{2, 3}, e32), "output.weight has shape [2 3], want [2, 2]")

	require.Equal(t, 1, Argmax([]float32{1, 3, 3, 2}))
	require.Equal(t, 2, Argmax([]float32{float32(math.NaN()), -5, 4}))
	require.Equal(t, -1, Argmax(nil))
}

// BenchmarkTernaryMatVec measures one 2B4T-shaped ffn_gate product (2560 inputs, 6912 outputs,
// I2_S) for one token.
func BenchmarkTernaryMatVec(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	const rows, cols = 6912, 2560
	data, err := model.EncodeI2S(randTrits(r, rows*cols), 0.5)
	require.NoError(b, err)
	w, err := model.NewTernaryMatrix(&model.Tensor{Name: "w", Type: model.TypeI2_S, Shape: []uint64{cols, rows}, Data: data})
	require.NoError(b, err)
	q := randInt8(r, cols)
	dst := make([]float32, rows)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		require.NoError(b, TernaryMatVec(dst, w, q, 1))
	}
}

// TestTernaryMatMulI2SLookupTable checks the I2_S lookup-table path against the definition,
// computed here from decoded rows: exact int32 sums, then float32(acc)*w/s, for every code byte
// value (all 256 appear, including the unused code 3 that decodes to 0).
func TestTernaryMatMulI2SLookupTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	const rows, cols, tokens = 37, 384, 3
	data := make([]byte, rows*cols/4+model.I2SScaleBytes)
	for i := 0; i < rows*cols/4; i++ {
		data[i] = byte(rng.IntN(256))
	}
	const scale = float32(0.0371)
	binary.LittleEndian.PutUint32(data[rows*cols/4:], math.Float32bits(scale))
	w, err := model.NewTernaryMatrix(&model.Tensor{Name: "w", Type: model.TypeI2_S, Shape: []uint64{cols, rows}, Data: data})
	require.NoError(t, err)
	q := make([]int8, tokens*cols)
	for i := range q {
		q[i] = int8(rng.IntN(256) - 128)
	}
	s := []float32{1.5, 127, 0.3}
	got := make([]float32, tokens*rows)
	require.NoError(t, TernaryMatMul(got, w, q, s))
	trits := make([]int8, cols)
	sc := make([]float32, 1)
	for r := 0; r < rows; r++ {
		require.NoError(t, w.Row(r, trits, sc))
		for tok := 0; tok < tokens; tok++ {
			var acc int32
			for c, tv := range trits {
				acc += int32(tv) * int32(q[tok*cols+c])
			}
			want := float32(float32(float32(acc)*scale) * Rcp32(s[tok]))
			require.Equal(t, math.Float32bits(want), math.Float32bits(got[tok*rows+r]), "row %d token %d", r, tok)
		}
	}
}
