//go:build cgo

package runtime

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
)

// quantTokens quantizes T random tokens of cols activations as rmsnorm_quant would: the int8
// values, the scales and the (1/s, Σq) pairs of the kernels' sq buffer.
func quantTokens(t *testing.T, rng *rand.Rand, T, cols int) ([]int8, []float32, []uint32) {
	x := randFloats(rng, uint32(T*cols))
	q := make([]int8, T*cols)
	s := make([]float32, T)
	sq := make([]uint32, 2*T)
	for tok := 0; tok < T; tok++ {
		var err error
		s[tok], err = cpuref.QuantizeActivations(q[tok*cols:(tok+1)*cols], x[tok*cols:(tok+1)*cols])
		require.NoError(t, err)
		var sum int32
		for _, v := range q[tok*cols : (tok+1)*cols] {
			sum += int32(v)
		}
		sq[2*tok], sq[2*tok+1] = math.Float32bits(cpuref.Rcp32(s[tok])), uint32(sum)
	}
	return q, s, sq
}

// bitLinear is cpuref's BitLinear output of m for the tokens (q, s), times the separate output
// scale oscale when it is not 0 — what TernaryMatMul must write.
func bitLinear(t *testing.T, m *model.TernaryMatrix, q []int8, s []float32, oscale float32) []float32 {
	want := make([]float32, len(s)*m.Rows)
	require.NoError(t, cpuref.TernaryMatMul(want, m, q, s))
	if oscale != 0 {
		for i := range want {
			want[i] *= oscale
		}
	}
	return want
}

// fusedCases are the tensor sets of the fused-kernel tests: every tensor with one scale (I2_S,
// TQ2_0), and one whose blocks carry different scales among ones with a single scale (all stored
// with per-block scales then).
var fusedCases = []struct {
	name   string
	typ    model.TensorType
	blocks bool
	cols   int
}{{"i2_s", model.TypeI2_S, false, 640}, {"tq2_0", model.TypeTQ2_0, false, 512}, {"block-scales", model.TypeTQ2_0, true, 1536}}

// TestTernaryStackedParity: q, k and v stacked into one matrix (StackTernary) and run as one
// dispatch (TernaryMatMulStacked) give each tensor's own TernaryMatMul bits — its weight scale,
// its output scale, its output buffer and offset — GEMV and GEMM, on every variant.
func TestTernaryStackedParity(t *testing.T) {
	for _, disable := range [][]string{nil, {"dot"}, {"subgroup-arithmetic"}} {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("ternary_gemv"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(31, 32))
			for _, c := range fusedCases {
				rows := []int{40, 24, 16} // k and v differ too, so a swapped stride shows
				mats := make([]*model.TernaryMatrix, 3)
				for i := range mats {
					mats[i], _ = ternaryTensor(t, rng, rows[i], c.cols, c.typ, 0.0625+rng.Float32())
				}
				if c.blocks {
					mats[1] = blockScaleTensor(t, rng, rows[1], c.cols, c.typ)
				}
				oscales := []float32{0, 1.5, 0.75}
				words, w, err := StackTernary("qkv", mats, oscales, false)
				require.NoError(t, err)
				require.Equal(t, c.blocks, w.BlockScales != 0, c.name)
				require.EqualValues(t, 80, w.Rows)
				bw := newBuf(t, d, words)
				w.Buf = bw.Whole()
				for _, T := range []int{1, 3, 17} {
					q, s, sq := quantTokens(t, rng, T, c.cols)
					ba, bsq := newBuf(t, d, PackInt8(q)), newBuf(t, d, sq)
					offs := []uint32{0, 5, 3}
					var outs []SegmentOut
					var bys []*gpu.Buffer
					for i := range mats {
						by := zeroBuf(t, d, 4*(int(offs[i])+T*rows[i]))
						bys = append(bys, by)
						outs = append(outs, SegmentOut{Y: by.Whole(), YOff: offs[i], YStride: uint32(rows[i])})
					}
					require.NoError(t, d.Run(func(sq2 *gpu.Sequence) error {
						return ks.TernaryMatMulStacked(sq2, w, ba.Whole(), bsq.Whole(), MatMulArgs{T: uint32(T)}, outs)
					}))
					for i, m := range mats {
						want := bitLinear(t, m, q, s, oscales[i])
						got := readF32(t, bys[i], int(offs[i])+T*rows[i])[offs[i]:]
						for j := range want {
							require.Equal(t, math.Float32bits(want[j]), math.Float32bits(got[j]), "%s T=%d tensor %d i=%d: cpu %v gpu %v", c.name, T, i, j, want[j], got[j])
						}
					}
					for _, b := range append(bys, ba, bsq) {
						b.Release()
					}
				}
				bw.Release()
			}
		})
	}
}

// TestTernaryGLUParity: gate and up interleaved in one matrix, run as one dispatch with the
// gated activation in its epilogue (TernaryGLU), give cpuref.ReLU2GLU / cpuref.SiLUGLU of the
// two BitLinear outputs bit for bit — each with its own weight and output scale — GEMV and GEMM,
// on every variant; and the same stacked matrix un-interleaved (TernaryMatMulStacked) followed by
// the GLU kernel gives the same bits.
func TestTernaryGLUParity(t *testing.T) {
	for _, disable := range [][]string{nil, {"dot"}, {"subgroup-arithmetic"}} {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("ternary_gemv"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(33, 34))
			for _, c := range fusedCases {
				const F = 37 // rows of gate and up: the last workgroup is partial
				mats := make([]*model.TernaryMatrix, 2)
				for i := range mats {
					mats[i], _ = ternaryTensor(t, rng, F, c.cols, c.typ, 0.0625+rng.Float32())
				}
				if c.blocks {
					mats[0] = blockScaleTensor(t, rng, F, c.cols, c.typ)
				}
				oscales := []float32{1.25, 0}
				words, w, err := StackTernary("gate_up", mats, oscales, true)
				require.NoError(t, err)
				bw := newBuf(t, d, words)
				w.Buf = bw.Whole()
				words2, w2, err := StackTernary("gate_up", mats, oscales, false)
				require.NoError(t, err)
				bw2 := newBuf(t, d, words2)
				w2.Buf = bw2.Whole()
				for _, act := range []model.Activation{model.ActReLU2, model.ActSiLU} {
					for _, T := range []int{1, 3, 17} {
						q, s, sq := quantTokens(t, rng, T, c.cols)
						gate, up := bitLinear(t, mats[0], q, s, oscales[0]), bitLinear(t, mats[1], q, s, oscales[1])
						want := make([]float32, T*F)
						if act == model.ActReLU2 {
							require.NoError(t, cpuref.ReLU2GLU(want, gate, up))
						} else {
							require.NoError(t, cpuref.SiLUGLU(want, gate, up))
						}
						const off = 7
						ba, bsq := newBuf(t, d, PackInt8(q)), newBuf(t, d, sq)
						by := zeroBuf(t, d, 4*(off+T*F))
						bg, bu := zeroBuf(t, d, 4*T*F), zeroBuf(t, d, 4*T*F)
						require.NoError(t, d.Run(func(seq *gpu.Sequence) error {
							if err := ks.TernaryGLU(seq, w, ba.Whole(), bsq.Whole(), by.Whole(), MatMulArgs{T: uint32(T), YOff: off, YStride: F}, act); err != nil {
								return err
							}
							outs := []SegmentOut{{Y: bg.Whole(), YStride: F}, {Y: bu.Whole(), YStride: F}}
							if err := ks.TernaryMatMulStacked(seq, w2, ba.Whole(), bsq.Whole(), MatMulArgs{T: uint32(T)}, outs); err != nil {
								return err
							}
							return ks.GLU(seq, bg.Whole(), bu.Whole(), uint32(T*F), act)
						}))
						got := readF32(t, by, off+T*F)[off:]
						unfused := readF32(t, bg, T*F)
						for i := range want {
							require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "%s %s T=%d i=%d: cpu %v gpu %v", c.name, act, T, i, want[i], got[i])
							require.Equal(t, math.Float32bits(want[i]), math.Float32bits(unfused[i]), "unfused %s %s T=%d i=%d", c.name, act, T, i)
						}
						for _, b := range []*gpu.Buffer{ba, bsq, by, bg, bu} {
							b.Release()
						}
					}
				}
				bw.Release()
				bw2.Release()
			}
		})
	}
}

// TestStackTernaryErrors: stacking needs equal columns (and equal rows, interleaved), 1 to 3
// tensors (2 interleaved); a stacked matrix is refused by the single-tensor and GLU entry points
// that would misread it.
func TestStackTernaryErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	a, _ := ternaryTensor(t, rng, 8, 256, model.TypeI2_S, 0.5)
	b, _ := ternaryTensor(t, rng, 8, 512, model.TypeI2_S, 0.5)
	c, _ := ternaryTensor(t, rng, 16, 256, model.TypeI2_S, 0.5)
	for _, bad := range []struct {
		mats       []*model.TernaryMatrix
		interleave bool
	}{{nil, false}, {[]*model.TernaryMatrix{a, a, a, a}, false}, {[]*model.TernaryMatrix{a, b}, false}, {[]*model.TernaryMatrix{a, c}, true}, {[]*model.TernaryMatrix{a, a, a}, true}} {
		_, _, err := StackTernary("x", bad.mats, nil, bad.interleave)
		require.Error(t, err, "%d tensors, interleave %v", len(bad.mats), bad.interleave)
	}
	_, w, err := StackTernary("x", []*model.TernaryMatrix{a, c}, nil, false)
	require.NoError(t, err)
	require.EqualValues(t, 24, w.Rows)
	d, ks := newKernels(t)
	require.Error(t, d.Run(func(s *gpu.Sequence) error {
		return ks.TernaryMatMul(s, w, gpu.Range{}, gpu.Range{}, gpu.Range{}, MatMulArgs{T: 1})
	}))
	require.Error(t, d.Run(func(s *gpu.Sequence) error {
		return ks.TernaryGLU(s, w, gpu.Range{}, gpu.Range{}, gpu.Range{}, MatMulArgs{T: 1}, model.ActReLU2)
	}))
}

// TestTernaryQKVRoPEParity: q, k and v stacked in the fused-RoPE order (StackTernaryRoPE) and
// run as one dispatch with RoPE and the KV store in the epilogue (TernaryQKVRoPE) give
// cpuref's BitLinear, then cpuref.RoPE (q, k) and cpuref.StoreKV (k, v) bit for bit — each tensor
// with its own weight and output scale — in both modes, with a partial rotary dimension, GEMV
// and GEMM, at several positions of a replayed sequence, on every variant.
func TestTernaryQKVRoPEParity(t *testing.T) {
	for _, disable := range [][]string{nil, {"dot"}, {"subgroup-arithmetic"}} {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("ternary_gemv_rope"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(41, 42))
			for _, c := range fusedCases {
				for _, sh := range []struct{ H, KVH, hd, ropeDim int }{{4, 2, 16, 16}, {2, 1, 32, 16}, {3, 3, 8, 8}} {
					for _, mode := range []model.RoPEMode{model.RoPENeox, model.RoPENorm} {
						rows := []int{sh.H * sh.hd, sh.KVH * sh.hd, sh.KVH * sh.hd}
						mats := make([]*model.TernaryMatrix, 3)
						for i := range mats {
							mats[i], _ = ternaryTensor(t, rng, rows[i], c.cols, c.typ, 0.0625+rng.Float32())
						}
						if c.blocks {
							mats[1] = blockScaleTensor(t, rng, rows[1], c.cols, c.typ)
						}
						oscales := []float32{0, 1.5, 0.75}
						words, w, err := StackTernaryRoPE("qkv", mats, oscales, sh.hd, sh.ropeDim, mode)
						require.NoError(t, err)
						require.Equal(t, c.blocks, w.BlockScales != 0, c.name)
						bw := newBuf(t, d, words)
						w.Buf = bw.Whole()
						const ctx, base = 24, 10000
						cs := newBuf(t, d, RoPETable(ctx, sh.ropeDim, base))
						kvDim := rows[1]
						for _, T := range []int{1, 3, 9} {
							q, s, sq := quantTokens(t, rng, T, c.cols)
							ba, bsq := newBuf(t, d, PackInt8(q)), newBuf(t, d, sq)
							const qOff = 5
							by := zeroBuf(t, d, 4*(qOff+T*rows[0]))
							kc, vc := zeroBuf(t, d, 2*ctx*kvDim), zeroBuf(t, d, 2*ctx*kvDim)
							seq, err := d.NewSequence()
							require.NoError(t, err)
							require.NoError(t, ks.TernaryQKVRoPE(seq, w, ba.Whole(), bsq.Whole(), by.Whole(), cs.Whole(), kc.Whole(), vc.Whole(),
								MatMulArgs{T: uint32(T), YOff: qOff, YStride: uint32(rows[0])}, ctx, nil))
							lin := make([][]float32, 3)
							for i, m := range mats {
								lin[i] = bitLinear(t, m, q, s, oscales[i])
							}
							wantK := make([]uint16, ctx*kvDim)
							wantV := make([]uint16, ctx*kvDim)
							for _, pos0 := range []int{0, 7, ctx - T} {
								require.NoError(t, seq.SetStep(0, uint32(pos0)))
								require.NoError(t, seq.Submit())
								got := readF32(t, by, qOff+T*rows[0])[qOff:]
								for tok := 0; tok < T; tok++ {
									wq := append([]float32(nil), lin[0][tok*rows[0]:(tok+1)*rows[0]]...)
									require.NoError(t, cpuref.RoPE(wq, sh.H, sh.hd, sh.ropeDim, pos0+tok, base, mode))
									for i := range wq {
										require.Equal(t, math.Float32bits(wq[i]), math.Float32bits(got[tok*rows[0]+i]), "%s %+v mode %d T=%d pos %d q %d: cpu %v gpu %v", c.name, sh, mode, T, pos0+tok, i, wq[i], got[tok*rows[0]+i])
									}
									wk := append([]float32(nil), lin[1][tok*kvDim:(tok+1)*kvDim]...)
									require.NoError(t, cpuref.RoPE(wk, sh.KVH, sh.hd, sh.ropeDim, pos0+tok, base, mode))
									require.NoError(t, cpuref.StoreKV(wantK, pos0+tok, wk))
									require.NoError(t, cpuref.StoreKV(wantV, pos0+tok, lin[2][tok*kvDim:(tok+1)*kvDim]))
								}
								gotK, err := gpu.Read[uint16](kc, 0, ctx*kvDim)
								require.NoError(t, err)
								gotV, err := gpu.Read[uint16](vc, 0, ctx*kvDim)
								require.NoError(t, err)
								require.Equal(t, wantK, gotK, "%s %+v k cache mode %d T=%d pos0 %d", c.name, sh, mode, T, pos0)
								require.Equal(t, wantV, gotV, "%s %+v v cache mode %d T=%d pos0 %d", c.name, sh, mode, T, pos0)
							}
							seq.Release()
							for _, b := range []*gpu.Buffer{ba, bsq, by, kc, vc} {
								b.Release()
							}
						}
						cs.Release()
						bw.Release()
					}
				}
			}
		})
	}
}

// TestStackTernaryRoPEErrors: the fused-RoPE order needs q, k and v of whole heads, k and v of
// equal rows, and head and rotary dims that are multiples of 4.
func TestStackTernaryRoPEErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 44))
	q, _ := ternaryTensor(t, rng, 16, 256, model.TypeI2_S, 1)
	k, _ := ternaryTensor(t, rng, 8, 256, model.TypeI2_S, 1)
	v4, _ := ternaryTensor(t, rng, 4, 256, model.TypeI2_S, 1)
	for _, bad := range []struct {
		mats        []*model.TernaryMatrix
		hd, ropeDim int
	}{
		{[]*model.TernaryMatrix{q, k}, 8, 8},     // no v
		{[]*model.TernaryMatrix{q, k, k}, 6, 6},  // head dim not a multiple of 4
		{[]*model.TernaryMatrix{q, k, k}, 8, 6},  // rope dim not a multiple of 4
		{[]*model.TernaryMatrix{q, k, k}, 8, 12}, // rope dim above the head dim
		{[]*model.TernaryMatrix{q, k, v4}, 4, 4}, // k and v differ
		{[]*model.TernaryMatrix{q, k, k}, 16, 8}, // k is half a head
	} {
		_, _, err := StackTernaryRoPE("x", bad.mats, nil, bad.hd, bad.ropeDim, model.RoPENeox)
		require.Error(t, err, "hd %d rope %d", bad.hd, bad.ropeDim)
	}
	_, w, err := StackTernaryRoPE("x", []*model.TernaryMatrix{q, k, k}, nil, 8, 4, model.RoPENorm)
	require.NoError(t, err)
	require.Equal(t, &RoPELayout{HeadDim: 8, RoPEDim: 4, Mode: model.RoPENorm}, w.RoPE)
}
