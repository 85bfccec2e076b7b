package cpuref

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// TestAttentionDotTreeOrder checks that scores use the canonical 8-way strided dot product. With
// q = k_0 = (4096, 1, 1, 1, 1, 1, 1, 1) the products are 2^24 and seven ones: the partial sums
// are the products themselves, the first tree level gives 2^24 + 1 -> 2^24 (a tie, to even) and
// 2, 2, 2, the next 2^24 + 2 and 4, and the dot product is 2^24 + 6 exactly, where a sequential
// sum would round every +1 away and give 2^24, the dot product with k_1 = (4096, 0, ..., 0). The
// two keys' scores then differ, and the output follows steps 2 to 4 of Attention's definition.
func TestAttentionDotTreeOrder(t *testing.T) {
	const hd = 8
	q := []float32{4096, 1, 1, 1, 1, 1, 1, 1}
	k := f16Row(4096, 1, 1, 1, 1, 1, 1, 1, 4096, 0, 0, 0, 0, 0, 0, 0)
	v := f16Row(1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0)
	require.Equal(t, float32(1<<24+6), attnDot(q, k[:hd]))
	require.Equal(t, float32(1<<24), attnDot(q, k[hd:]))

	scale := float32(1 / math.Sqrt(hd))
	s0, s1 := float32((1<<24+6)*scale), float32((1<<24)*scale)
	require.Greater(t, s0, s1)
	p1 := SoftmaxExp(float32(s1 - s0)) // p_0 = SoftmaxExp(0) = 1
	r := Rcp32(float32(1 + p1))        // one chunk: L = l_0 = 1 + p_1, O = o_0 = (1, p_1, 0, ...)
	want := []float32{r, float32(p1 * r), 0, 0, 0, 0, 0, 0}
	got := make([]float32, hd)
	require.NoError(t, Attention(got, q, k, v, 1, 1, 1, hd))
	require.Equal(t, want, got)
	require.NotEqual(t, float32(0.5), got[0], "equal scores: the dot product was summed sequentially")
}

// TestAttentionChunkFold places the largest score in the second chunk (the fold rescales the
// first chunk's partial by a = SoftmaxExp(-s)) and then in the first chunk (the second chunk's
// partial is scaled by b = SoftmaxExp(-s)). Keys 0..32 (pos 32: a full chunk and one key), all
// scores 0 except one key's s = float32(2 * float32(1/sqrt 8)) = 0.7071068; that key's value is
// (0, 1, 0, ...), every other value (1, 0, ...). The first case is worked through exactly; both
// are also compared with the float64 result, which they must match within a few ulp.
func TestAttentionChunkFold(t *testing.T) {
	const hd, pos = 8, 32
	q := []float32{2, 0, 0, 0, 0, 0, 0, 0}
	build := func(high int) (k, v []uint16) {
		for j := 0; j <= pos; j++ {
			if j == high {
				k = append(k, f16Row(1, 0, 0, 0, 0, 0, 0, 0)...)
				v = append(v, f16Row(0, 1, 0, 0, 0, 0, 0, 0)...)
			} else {
				k = append(k, f16Row(0, 0, 0, 0, 0, 0, 0, 0)...)
				v = append(v, f16Row(1, 0, 0, 0, 0, 0, 0, 0)...)
			}
		}
		return k, v
	}
	s := float32(2 * float32(1/math.Sqrt(hd)))

	// High key last: chunk 0 has m = 0, l = 32, o = (32, 0, ...) and is taken as is; chunk 1 has
	// m = s, l = 1, o = (0, 1, 0, ...), and the fold gives a = SoftmaxExp(0 - s), b = 1,
	// L = 32*a + 1, O = (32*a + 0, 0*a + 1).
	k, v := build(pos)
	a := SoftmaxExp(float32(0 - s))
	L := float32(float32(32*a) + 1)
	r := Rcp32(L)
	want := []float32{float32(float32(32*a) * r), r, 0, 0, 0, 0, 0, 0}
	got := make([]float32, hd)
	require.NoError(t, Attention(got, q, k, v, pos, 1, 1, hd))
	require.Equal(t, want, got)

	for _, high := range []int{pos, 0} {
		k, v := build(high)
		require.NoError(t, Attention(got, q, k, v, pos, 1, 1, hd))
		e := math.Exp(float64(s)) // the high key's weight relative to the others'
		require.InEpsilon(t, 32/(32+e), got[0], 4e-7, "high key %d", high)
		require.InEpsilon(t, e/(32+e), got[1], 4e-7, "high key %d", high)
	}
}

// TestAttentionSoftmaxCutoff checks that a weight below e^-40 of the maximum is exactly 0, both
// inside a chunk and for a whole chunk folded after a much larger maximum, while a weight just
// above the cut-off is kept. Key 0 scores s_0 = float32(128 * float32(1/sqrt 8)) = 45.25; keys
// 1..33 score 0 (x = -45.25: weight 0 in chunk 0, and chunk 1's b = 0), so the output is v_0
// exactly, whatever the other values. Then key 1 scores float32(17 * float32(1/sqrt 8)) = 6.01,
// x = -39.24, whose weight e^x = 9e-18 shows in the output's second dimension.
func TestAttentionSoftmaxCutoff(t *testing.T) {
	const hd, pos = 8, 33
	q := []float32{16, 0, 0, 0, 0, 0, 0, 0}
	k := make([]uint16, (pos+1)*hd)
	v := make([]uint16, (pos+1)*hd)
	for j := 0; j <= pos; j++ {
		row := f16Row(0, 0, 0, 0, 0, 0, 0, 0)
		if j == 0 {
			row = f16Row(8, 0, 0, 0, 0, 0, 0, 0)
		}
		copy(k[j*hd:], row)
	}
	values := func(other float32) {
		copy(v, f16Row(1, 0, 0, 0, 0, 0, 0, 0))
		for j := 1; j <= pos; j++ {
			copy(v[j*hd:], f16Row(0, other, 0, 0, 0, 0, 0, 0))
		}
	}
	got := make([]float32, hd)
	for _, other := range []float32{1, -1000, 60000} {
		values(other)
		require.NoError(t, Attention(got, q, k, v, pos, 1, 1, hd))
		require.Equal(t, []float32{1, 0, 0, 0, 0, 0, 0, 0}, got, "other values %v", other)
	}

	values(1)
	copy(k[hd:], f16Row(1.0625, 0, 0, 0, 0, 0, 0, 0))
	scale := float32(1 / math.Sqrt(hd))
	x := float32(float32(17*scale) - float32(128*scale))
	require.Greater(t, x, float32(SoftmaxCutoff))
	p := Exp32(x) // 1 + p rounds to 1, so L = 1 and the second dimension is p * Rcp32(1) = p
	require.NoError(t, Attention(got, q, k, v, pos, 1, 1, hd))
	require.Equal(t, []float32{1, p, 0, 0, 0, 0, 0, 0}, got)
	require.InEpsilon(t, math.Exp(float64(x)), p, 1e-6)
}

// TestAttentionUniformMean: with q = 0 every score is 0 and every weight 1, so over 64 keys (two
// full chunks) L = 64, Rcp32(64) = 2^-6 exactly, and with small integer values every sum is
// exact: the output is exactly the mean of the values.
func TestAttentionUniformMean(t *testing.T) {
	const heads, kvHeads, hd, pos = 4, 2, 16, 63
	q := make([]float32, heads*hd)
	k := make([]uint16, (pos+1)*kvHeads*hd)
	v := make([]uint16, (pos+1)*kvHeads*hd)
	sum := make([]float64, kvHeads*hd)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range k {
		k[i] = model.F32ToF16(float32(rng.NormFloat64()))
		x := float32(rng.IntN(201) - 100)
		v[i] = model.F32ToF16(x)
		sum[i%(kvHeads*hd)] += float64(x)
	}
	got := make([]float32, heads*hd)
	require.NoError(t, Attention(got, q, k, v, pos, heads, kvHeads, hd))
	for h := range heads {
		for d := range hd {
			require.Equal(t, float32(sum[(h/2)*hd+d]/64), got[h*hd+d], "head %d dim %d", h, d)
		}
	}
}

// TestAttentionNearFloat64 compares Attention with float64 naive softmax attention (one softmax
// over all keys, no chunks, no cut-off) on random data: 4 query heads on 2 KV heads, head dim 64,
// positions 0..99 (up to four chunks), f16 K and V from N(0,1) and queries N(0,1) * 2.5, so
// scores have magnitudes of a few units. runtime/attention_test.go derives the error bound of the
// canonical algorithm per output; for data like this it stays below 4e-5 of the largest |v| in
// the output's dimension, dominated by the worst case of the dot products. The tolerance here,
// 1e-4 of that largest |v|, keeps a margin and still catches a structural mistake (a chunk
// folded twice or not at all, a wrong rescaling), which moves outputs by 1e-2 or more.
func TestAttentionNearFloat64(t *testing.T) {
	const heads, kvHeads, hd, ctx = 4, 2, 64, 100
	rng := rand.New(rand.NewPCG(3, 4))
	k := make([]uint16, ctx*kvHeads*hd)
	v := make([]uint16, ctx*kvHeads*hd)
	for i := range k {
		k[i] = model.F32ToF16(float32(rng.NormFloat64()))
		v[i] = model.F32ToF16(float32(rng.NormFloat64()))
	}
	scale := float64(float32(1 / math.Sqrt(hd)))
	got := make([]float32, heads*hd)
	for _, pos := range []int{0, 1, 30, 31, 32, 33, 64, 99} {
		q := make([]float32, heads*hd)
		for i := range q {
			q[i] = float32(rng.NormFloat64() * 2.5)
		}
		require.NoError(t, Attention(got, q, k, v, pos, heads, kvHeads, hd))
		for h := range heads {
			off := (h / (heads / kvHeads)) * hd
			w := make([]float64, pos+1)
			m := math.Inf(-1)
			for j := range w {
				for d := range hd {
					w[j] += float64(q[h*hd+d]) * float64(f16[k[j*kvHeads*hd+off+d]])
				}
				w[j] *= scale
				m = max(m, w[j])
			}
			var l float64
			for j := range w {
				w[j] = math.Exp(w[j] - m)
				l += w[j]
			}
			for d := range hd {
				var o, vmax float64
				for j := range w {
					x := float64(f16[v[j*kvHeads*hd+off+d]])
					o += w[j] / l * x
					vmax = max(vmax, math.Abs(x))
				}
				require.InDelta(t, o, got[h*hd+d], 1e-4*vmax, "pos %d head %d dim %d", pos, h, d)
			}
		}
	}
}
