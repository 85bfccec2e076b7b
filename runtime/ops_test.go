//go:build cgo

package runtime

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
)

func newBuf[T gpu.Elem](t *testing.T, d *gpu.Device, v []T) *gpu.Buffer {
	b, err := gpu.NewBufferFrom(d, v)
	require.NoError(t, err)
	t.Cleanup(b.Release) // before the device closes, which fails on leaks
	return b
}

func zeroBuf(t *testing.T, d *gpu.Device, bytes int) *gpu.Buffer {
	return newBuf(t, d, make([]byte, bytes))
}

func readF32(t *testing.T, b *gpu.Buffer, n int) []float32 {
	v, err := gpu.Read[float32](b, 0, n)
	require.NoError(t, err)
	return v
}

// TestRMSNormQuantParity compares the fused kernel with cpuref.RMSNorm + QuantizeActivations.
// Both follow the canonical arithmetic (64-lane sum of squares, cr_rcp/cr_rsqrt), so every
// output is bit-identical: y, q, 1/s and Σq.
func TestRMSNormQuantParity(t *testing.T) {
	d, ks := newKernels(t)
	rng := rand.New(rand.NewPCG(5, 6))
	for _, shape := range [][2]int{{4, 1}, {256, 3}, {2560, 2}, {6912, 1}, {100, 5}} {
		D, T := shape[0], shape[1]
		x := randFloats(rng, uint32(D*T))
		x[D*T-1] = 9 // the absmax sits in the last element of the last token
		w := randFloats(rng, uint32(D))
		const eps = 1e-5
		bx, bw := newBuf(t, d, x), newBuf(t, d, w)
		bq, bs, by := zeroBuf(t, d, D*T), zeroBuf(t, d, 8*T), zeroBuf(t, d, 4*D*T)
		require.NoError(t, d.Run(func(s *gpu.Sequence) error {
			a := RMSNormArgs{D: uint32(D), T: uint32(T), XStride: uint32(D), OutStride: uint32(D / 4), Eps: eps}
			if err := ks.RMSNormQuant(s, bx.Whole(), bw.Whole(), bq.Whole(), bs.Whole(), a); err != nil {
				return err
			}
			a.OutStride = uint32(D)
			return ks.RMSNorm(s, bx.Whole(), bw.Whole(), by.Whole(), a)
		}))
		qGPU, err := gpu.Read[int8](bq, 0, D*T)
		require.NoError(t, err)
		sq, err := gpu.Read[uint32](bs, 0, 2*T)
		require.NoError(t, err)
		yGPU := readF32(t, by, D*T)
		for tok := 0; tok < T; tok++ {
			y := make([]float32, D)
			require.NoError(t, cpuref.RMSNorm(y, x[tok*D:(tok+1)*D], w, eps))
			q := make([]int8, D)
			s, err := cpuref.QuantizeActivations(q, y)
			require.NoError(t, err)
			require.Equal(t, math.Float32bits(cpuref.Rcp32(s)), sq[2*tok], "1/scale D=%d token %d", D, tok)
			var qsum int32
			for i := 0; i < D; i++ {
				require.Equal(t, math.Float32bits(y[i]), math.Float32bits(yGPU[tok*D+i]), "rmsnorm D=%d t=%d i=%d", D, tok, i)
				require.Equal(t, q[i], qGPU[tok*D+i], "q D=%d t=%d i=%d", D, tok, i)
				qsum += int32(q[i])
			}
			require.Equal(t, qsum, int32(sq[2*tok+1]), "Σq D=%d t=%d", D, tok)
		}
	}
}

// TestQuantizeParity: the norm-free quantize kernel (BitLinear inputs without a sub-norm) gives
// cpuref.QuantizeActivations' q, 1/s and Σq bits for every token.
func TestQuantizeParity(t *testing.T) {
	d, ks := newKernels(t)
	rng := rand.New(rand.NewPCG(7, 8))
	for _, shape := range [][2]int{{4, 1}, {256, 3}, {2560, 2}, {6912, 1}, {100, 5}} {
		D, T := shape[0], shape[1]
		x := randFloats(rng, uint32(D*T))
		x[D*T-1] = 9 // the absmax sits in the last element of the last token
		bx := newBuf(t, d, x)
		bq, bs := zeroBuf(t, d, D*T), zeroBuf(t, d, 8*T)
		require.NoError(t, d.Run(func(s *gpu.Sequence) error {
			return ks.Quantize(s, bx.Whole(), bq.Whole(), bs.Whole(), RMSNormArgs{D: uint32(D), T: uint32(T), XStride: uint32(D), OutStride: uint32(D / 4)})
		}))
		qGPU, err := gpu.Read[int8](bq, 0, D*T)
		require.NoError(t, err)
		sq, err := gpu.Read[uint32](bs, 0, 2*T)
		require.NoError(t, err)
		for tok := 0; tok < T; tok++ {
			q := make([]int8, D)
			s, err := cpuref.QuantizeActivations(q, x[tok*D:(tok+1)*D])
			require.NoError(t, err)
			require.Equal(t, math.Float32bits(cpuref.Rcp32(s)), sq[2*tok], "1/scale D=%d token %d", D, tok)
			require.Equal(t, q, qGPU[tok*D:(tok+1)*D], "q D=%d token %d", D, tok)
			var qsum int32
			for _, v := range q {
				qsum += int32(v)
			}
			require.Equal(t, qsum, int32(sq[2*tok+1]), "Σq D=%d t=%d", D, tok)
		}
	}
}

func ternaryTensor(t *testing.T, rng *rand.Rand, rows, cols int, typ model.TensorType, scale float32) (*model.TernaryMatrix, []int8) {
	trits := make([]int8, rows*cols)
	for i := range trits {
		trits[i] = int8(rng.IntN(3) - 1)
	}
	var data []byte
	var err error
	switch typ {
	case model.TypeI2_S:
		data, err = model.EncodeI2S(trits, scale)
	case model.TypeTQ2_0:
		scales := make([]float32, rows*cols/256)
		for i := range scales {
			scales[i] = scale
		}
		data, err = model.EncodeTQ2_0(trits, scales)
	}
	require.NoError(t, err)
	m, err := model.NewTernaryMatrix(&model.Tensor{Name: "w", Type: typ, Shape: []uint64{uint64(cols), uint64(rows)}, Data: data})
	require.NoError(t, err)
	return m, trits
}

// TestTernaryMatMulParity feeds the GPU the CPU's int8 activations and 1/scales: the int32 dot
// products agree exactly and y = (float(acc)*w)*(1/s) is two correctly rounded products, so every
// output is bit-identical, with and without the fused residual add. Every variant the device has
// runs: packed dot product, subgroup reduction, shared-memory fallback.
func TestTernaryMatMulParity(t *testing.T) {
	for _, disable := range [][]string{nil, {"dot"}, {"subgroup-arithmetic"}} {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("ternary_gemv"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, 8))
			cases := []struct {
				rows, cols int
				typ        model.TensorType
			}{{7, 128, model.TypeI2_S}, {33, 256, model.TypeTQ2_0}, {300, 640, model.TypeI2_S}, {64, 2560, model.TypeI2_S}}
			for _, c := range cases {
				m, _ := ternaryTensor(t, rng, c.rows, c.cols, c.typ, 0.0625+rng.Float32())
				words, scale, err := RepackTernary(m)
				require.NoError(t, err)
				bw := newBuf(t, d, words)
				w := &TernaryWeights{Name: "w", Rows: uint32(c.rows), Cols: uint32(c.cols), Scale: scale, Buf: bw.Whole()}
				for _, T := range []int{1, 2, 17} {
					q, s, sq := quantTokens(t, rng, T, c.cols)
					want := make([]float32, T*c.rows)
					require.NoError(t, cpuref.TernaryMatMul(want, m, q, s))
					requireTernaryMatMul(t, d, ks, w, q, sq, want, randFloats(rng, uint32(T*c.rows)), fmt.Sprintf("%dx%d T=%d", c.rows, c.cols, T))
				}
				bw.Release()
			}
		})
	}
}

// requireTernaryMatMul runs ks.TernaryMatMul for w on the quantized tokens (q, sq) twice — writing,
// and accumulating onto base — and requires want and base+want bit for bit; what labels failures.
func requireTernaryMatMul(t *testing.T, d *gpu.Device, ks *Kernels, w *TernaryWeights, q []int8, sq []uint32, want, base []float32, what string) {
	t.Helper()
	T, rows := len(sq)/2, int(w.Rows)
	ba, bsq := newBuf(t, d, PackInt8(q)), newBuf(t, d, sq)
	by, byAcc := zeroBuf(t, d, 4*T*rows), newBuf(t, d, base)
	defer func() {
		for _, b := range []*gpu.Buffer{ba, bsq, by, byAcc} {
			b.Release()
		}
	}()
	require.NoError(t, d.Run(func(s *gpu.Sequence) error {
		args := MatMulArgs{T: uint32(T), YStride: uint32(rows)}
		if err := ks.TernaryMatMul(s, w, ba.Whole(), bsq.Whole(), by.Whole(), args); err != nil {
			return err
		}
		args.Accumulate = true
		return ks.TernaryMatMul(s, w, ba.Whole(), bsq.Whole(), byAcc.Whole(), args)
	}), what)
	got, gotAcc := readF32(t, by, T*rows), readF32(t, byAcc, T*rows)
	for i := range want {
		require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "%s i=%d: cpu %v gpu %v", what, i, want[i], got[i])
		require.Equal(t, math.Float32bits(base[i]+want[i]), math.Float32bits(gotAcc[i]), "accumulate %s i=%d", what, i)
	}
}

func TestRepackTernaryRejectsMixedBlockScales(t *testing.T) {
	trits := make([]int8, 512)
	data, err := model.EncodeTQ2_0(trits, []float32{1, 2})
	require.NoError(t, err)
	m, err := model.NewTernaryMatrix(&model.Tensor{Name: "blk.0.ffn_up.weight", Type: model.TypeTQ2_0, Shape: []uint64{256, 2}, Data: data})
	require.NoError(t, err)
	_, _, err = RepackTernary(m)
	require.ErrorContains(t, err, "blk.0.ffn_up.weight")
}

// TestF16MatMulParity: both sides compute the canonical 32-lane dot product (the subgroup variant
// partly by shuffles, the shared variant in shared memory), so every logit is bit-identical to
// cpuref.Logits. The matrix is split into several chunks to exercise the row-chunk dispatches.
func TestF16MatMulParity(t *testing.T) {
	for _, disable := range [][]string{nil, {"subgroup-shuffle"}} {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("f16_gemv"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(9, 10))
			const rows, cols = 301, 256
			ef := randFloats(rng, rows*cols)
			e := &model.Tensor{Name: "token_embd.weight", Type: model.TypeF16, Shape: []uint64{cols, rows}, Data: model.EncodeF16(ef)}
			halves := make([]uint32, rows*cols/2)
			for i := range halves {
				halves[i] = uint32(e.Data[4*i]) | uint32(e.Data[4*i+1])<<8 | uint32(e.Data[4*i+2])<<16 | uint32(e.Data[4*i+3])<<24
			}
			be := newBuf(t, d, halves)
			mat := &F16Matrix{Name: e.Name, Rows: rows, Cols: cols}
			for r0 := uint32(0); r0 < rows; r0 += 128 {
				n := min(128, rows-r0)
				mat.Chunks = append(mat.Chunks, F16Chunk{Row0: r0, Rows: n, Buf: be.Slice(uint64(r0)*cols*2, uint64(n)*cols*2)})
			}
			for _, T := range []int{1, 3, 9} {
				x := randFloats(rng, uint32(T*cols))
				bx, by := newBuf(t, d, x), zeroBuf(t, d, 4*T*rows)
				require.NoError(t, d.Run(func(s *gpu.Sequence) error {
					return ks.F16MatMul(s, mat, bx.Whole(), by.Whole(), F16Args{T: uint32(T), YStride: rows})
				}))
				got := readF32(t, by, T*rows)
				for tok := 0; tok < T; tok++ {
					want := make([]float32, rows)
					require.NoError(t, cpuref.Logits(want, x[tok*cols:(tok+1)*cols], e))
					for r := 0; r < rows; r++ {
						require.Equal(t, math.Float32bits(want[r]), math.Float32bits(got[tok*rows+r]), "T=%d tok=%d row=%d: cpu %v gpu %v", T, tok, r, want[r], got[tok*rows+r])
					}
				}
			}
		})
	}
}

// TestRoPEKVParity: the rotation uses the same f32 cos/sin values and the same f32 operations
// (no contraction) as cpuref.RoPE, and the cache stores f16 rounded to nearest-even like
// cpuref.StoreKV, so q and the caches must match bit for bit, in both modes and with a partial
// rotary dimension, across a replayed sequence at several positions.
func TestRoPEKVParity(t *testing.T) {
	d, ks := newKernels(t)
	rng := rand.New(rand.NewPCG(11, 12))
	for _, mode := range []model.RoPEMode{model.RoPENeox, model.RoPENorm} {
		for _, c := range []struct{ T, H, KVH, hd, ropeDim int }{{1, 4, 2, 64, 64}, {5, 4, 1, 128, 128}, {3, 2, 2, 32, 16}} {
			const ctx, base = 40, 10000
			table := RoPETable(ctx, c.ropeDim, base)
			cs := newBuf(t, d, table)
			kc, vc := zeroBuf(t, d, 2*ctx*c.KVH*c.hd), zeroBuf(t, d, 2*ctx*c.KVH*c.hd)
			q := randFloats(rng, uint32(c.T*c.H*c.hd))
			k := randFloats(rng, uint32(c.T*c.KVH*c.hd))
			v := randFloats(rng, uint32(c.T*c.KVH*c.hd))
			q[0] = 70000 // overflows f16 once stored? (q is not stored; k below is)
			k[1] = 1e-7  // an f16 subnormal
			k[2] = 65520 // rounds to f16 infinity
			bq, bk, bv := newBuf(t, d, q), newBuf(t, d, k), newBuf(t, d, v)
			seq, err := d.NewSequence()
			require.NoError(t, err)
			args := RoPEArgs{T: uint32(c.T), H: uint32(c.H), KVH: uint32(c.KVH), HeadDim: uint32(c.hd), RoPEDim: uint32(c.ropeDim), Mode: mode, Ctx: ctx}
			require.NoError(t, ks.RoPEKV(seq, bq.Whole(), bk.Whole(), bv.Whole(), cs.Whole(), kc.Whole(), vc.Whole(), args))
			kvDim := c.KVH * c.hd
			wantK := make([]uint16, ctx*kvDim)
			wantV := make([]uint16, ctx*kvDim)
			for _, pos0 := range []int{0, 7, ctx - c.T} {
				// The kernel rotates q in place: restore it before each replay.
				require.NoError(t, gpu.Write(bq, 0, q))
				require.NoError(t, seq.SetStep(0, uint32(pos0)))
				require.NoError(t, seq.Submit())
				gotQ := readF32(t, bq, len(q))
				for tok := 0; tok < c.T; tok++ {
					wq := append([]float32(nil), q[tok*c.H*c.hd:(tok+1)*c.H*c.hd]...)
					require.NoError(t, cpuref.RoPE(wq, c.H, c.hd, c.ropeDim, pos0+tok, base, mode))
					for i := range wq {
						require.Equal(t, math.Float32bits(wq[i]), math.Float32bits(gotQ[tok*c.H*c.hd+i]), "q mode %d pos %d i %d", mode, pos0+tok, i)
					}
					wk := append([]float32(nil), k[tok*kvDim:(tok+1)*kvDim]...)
					require.NoError(t, cpuref.RoPE(wk, c.KVH, c.hd, c.ropeDim, pos0+tok, base, mode))
					require.NoError(t, cpuref.StoreKV(wantK, pos0+tok, wk))
					require.NoError(t, cpuref.StoreKV(wantV, pos0+tok, v[tok*kvDim:(tok+1)*kvDim]))
				}
				gotK, err := gpu.Read[uint16](kc, 0, ctx*kvDim)
				require.NoError(t, err)
				gotV, err := gpu.Read[uint16](vc, 0, ctx*kvDim)
				require.NoError(t, err)
				require.Equal(t, wantK, gotK, "k cache mode %d pos0 %d", mode, pos0)
				require.Equal(t, wantV, gotV, "v cache mode %d pos0 %d", mode, pos0)
			}
			seq.Release()
		}
	}
}

// TestGLUParity: ReLU² is correctly rounded f32 products and SiLU uses the canonical cr_exp and
// cr_rcp, so both must equal cpuref bit for bit.
func TestGLUParity(t *testing.T) {
	d, ks := newKernels(t)
	rng := rand.New(rand.NewPCG(13, 14))
	for _, n := range []uint32{1, 7, 1000, 70001} {
		g := randFloats(rng, n)
		u := randFloats(rng, n)
		for _, act := range []model.Activation{model.ActReLU2, model.ActSiLU} {
			bg, bu := newBuf(t, d, g), newBuf(t, d, u)
			require.NoError(t, d.Run(func(s *gpu.Sequence) error { return ks.GLU(s, bg.Whole(), bu.Whole(), n, act) }))
			got := readF32(t, bg, int(n))
			want := make([]float32, n)
			if act == model.ActReLU2 {
				require.NoError(t, cpuref.ReLU2GLU(want, g, u))
			} else {
				require.NoError(t, cpuref.SiLUGLU(want, g, u))
			}
			for i := range want {
				require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "%s n=%d i=%d g=%v", act, n, i, g[i])
			}
		}
	}
	require.Error(t, d.Run(func(s *gpu.Sequence) error { return ks.GLU(s, gpu.Range{}, gpu.Range{}, 1, "gelu") }))
}
