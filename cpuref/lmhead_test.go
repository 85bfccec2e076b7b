package cpuref

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// q8Matrix builds a Q8_0 matrix of len(rows) rows from per-block (d, w) pairs: block b of row r
// has f16 scale rows[r][b].d and all 32 weights rows[r][b].w.
func q8Matrix(rows [][]q8Block) *model.Tensor {
	blocks := len(rows[0])
	data := make([]byte, 0, len(rows)*blocks*model.Q8_0BlockBytes)
	for _, r := range rows {
		for _, b := range r {
			data = binary.LittleEndian.AppendUint16(data, model.F32ToF16(b.d))
			for range model.Q8_0BlockElems {
				data = append(data, byte(b.w))
			}
		}
	}
	return &model.Tensor{Name: "output.weight", Type: model.TypeQ8_0, Shape: []uint64{uint64(blocks * 32), uint64(len(rows))}, Data: data}
}

type q8Block struct {
	d float32
	w int8
}

// TestLogitsQ8HandComputed checks LogitsQ8 against logits worked out by hand. Row 0: two blocks,
// d = 0.5 with weights 1 and d = 2 with weights -1, activations all 2 and s = 2:
// (0.5*64 + 2*(-64)) * Rcp32(2) = -48. Row 1 pins the canonical float order: 34 blocks whose
// terms are 2^24 (block 0: d = 8192, w = 64, q = 1), 1 (block 1) and 1 (block 33, which joins
// block 1 in lane 1); lane 1 holds 2 before the tree adds it to 2^24, so the logit is 2^24 + 2 —
// a sum in block order would round 2^24 + 1 back to 2^24 twice.
func TestLogitsQ8HandComputed(t *testing.T) {
	zero := q8Block{0, 0}
	row0 := []q8Block{{0.5, 1}, {2, -1}}
	e := q8Matrix([][]q8Block{row0})
	q := make([]int8, 64)
	for i := range q {
		q[i] = 2
	}
	dst := make([]float32, 1)
	require.NoError(t, LogitsQ8(dst, q, 2, e))
	require.Equal(t, float32(-48), dst[0])

	row1 := make([]q8Block, 34)
	for i := range row1 {
		row1[i] = zero
	}
	row1[0], row1[1], row1[33] = q8Block{8192, 64}, q8Block{1.0 / 32, 1}, q8Block{1.0 / 32, 1}
	e = q8Matrix([][]q8Block{row1, row1})
	q = make([]int8, 34*32)
	for i := range q {
		q[i] = 1
	}
	dst = make([]float32, 2)
	require.NoError(t, LogitsQ8(dst, q, 1, e))
	require.Equal(t, float32(1<<24+2), dst[0])
	require.Equal(t, dst[0], dst[1])

	// Errors: not Q8_0, a width that is not whole blocks, lengths that do not match the shape.
	require.ErrorContains(t, LogitsQ8(dst, q, 1, &model.Tensor{Name: "w", Type: model.TypeF16, Shape: []uint64{1088, 2}}), "tensor w is type F16")
	require.ErrorContains(t, LogitsQ8(dst[:1], q, 1, e), "want Q8_0 [1088, 1]")
	require.ErrorContains(t, LogitsQ8(dst, q[:1000], 1, e), "want Q8_0 [1000, 2]")
}

// TestLogitsQ8ApproximatesLogits: the q8_0 head computes dequant(E) · dequant(q(x)), so on random
// data it is within the quantization error of the exact float dot product of the Q8_0 matrix with
// x: per element the activation error is at most half a step (amax/254), so |error| <=
// Σ_j |E_vj| * amax/254 (plus f32 rounding, far smaller). A wrong scale, block or lane mapping
// misses by the size of the logit itself.
func TestLogitsQ8ApproximatesLogits(t *testing.T) {
	const dim, vocab = 256, 50
	x := make([]float32, dim)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)*0.7) * (1 + float64(i%5)))
	}
	f := make([]float32, dim*vocab)
	for i := range f {
		f[i] = float32(math.Cos(float64(i)*1.3)) * 0.02 * float32(1+i%3)
	}
	e, err := model.QuantizeQ8_0Matrix(&model.Tensor{Name: "output.weight", Type: model.TypeF32, Shape: []uint64{dim, vocab}, Data: model.EncodeF32(f)})
	require.NoError(t, err)
	q := make([]int8, dim)
	s, err := QuantizeActivations(q, x)
	require.NoError(t, err)
	got := make([]float32, vocab)
	require.NoError(t, LogitsQ8(got, q, s, e))
	var amax float64
	for _, v := range x {
		amax = max(amax, math.Abs(float64(v)))
	}
	row := make([]float32, dim)
	for v := range vocab {
		require.NoError(t, model.FloatRow(e, v, row))
		var exact, bound float64
		for j := range row {
			exact += float64(row[j]) * float64(x[j])
			bound += math.Abs(float64(row[j])) * amax / 254
		}
		require.InDelta(t, exact, float64(got[v]), bound*1.01+1e-6, "row %d", v)
	}
}

// TestNewLMHead: WithLMHead chooses the head; the q8_0 head re-quantizes the F16 embedding (the
// input embedding stays F16), gives other logits than the f16 head, and is what LMHead reports;
// an unknown head is refused.
func TestNewLMHead(t *testing.T) {
	m := synthModel(t, synthOptions{typ: model.TypeI2_S, wScale: 0.0625, seed: 5})
	f16, err := New(m, 8, WithLMHead(LMHeadF16))
	require.NoError(t, err)
	q8, err := New(m, 8, WithLMHead(LMHeadQ8_0))
	require.NoError(t, err)
	require.Equal(t, LMHeadF16, f16.LMHead())
	require.Equal(t, LMHeadQ8_0, q8.LMHead())
	def, err := New(m, 8)
	require.NoError(t, err)
	require.Equal(t, DefaultLMHead, def.LMHead())
	lf, err := f16.Prefill(prompt, true)
	require.NoError(t, err)
	lq, err := q8.Prefill(prompt, true)
	require.NoError(t, err)
	require.NotEqual(t, lf, lq)
	_, err = New(m, 8, WithLMHead("q4_0"))
	require.ErrorContains(t, err, `unknown LM head "q4_0"`)
	h, err := ParseLMHead("")
	require.NoError(t, err)
	require.Equal(t, DefaultLMHead, h)
	_, err = ParseLMHead("f32")
	require.ErrorContains(t, err, `--lm-head "f32"`)
}

// BenchmarkLMHead times one token's logits through each head on a 2B4T-wide matrix (dim 2560,
// 16384 rows: an eighth of the 2B4T vocabulary), so the per-row costs compare: the f16 head
// reads 2 bytes a weight, the q8_0 head 1.0625.
func BenchmarkLMHead(b *testing.B) {
	const dim, vocab = 2560, 16384
	f := make([]float32, dim*vocab)
	for i := range f {
		f[i] = float32(math.Sin(float64(i))) * 0.05
	}
	e := &model.Tensor{Name: "output.weight", Type: model.TypeF16, Shape: []uint64{dim, vocab}, Data: model.EncodeF16(f)}
	q8, err := model.QuantizeQ8_0Matrix(e)
	require.NoError(b, err)
	x := f[:dim]
	qa := make([]int8, dim)
	dst := make([]float32, vocab)
	b.Run("f16", func(b *testing.B) {
		for b.Loop() {
			require.NoError(b, Logits(dst, x, e))
		}
	})
	b.Run("q8_0", func(b *testing.B) {
		for b.Loop() {
			s, err := QuantizeActivations(qa, x)
			require.NoError(b, err)
			require.NoError(b, LogitsQ8(dst, qa, s, q8))
		}
	})
}
