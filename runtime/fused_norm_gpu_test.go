//go:build cgo

package runtime

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/model"
)

// normToken draws one token's input x (cols values of magnitude scale, a spike at a random index
// so the absmax is not always the same element) and an RMSNorm weight w, and returns them with
// what rmsnorm_quant makes of them on the CPU: cpuref.RMSNorm, then cpuref.QuantizeActivations'
// int8 values q and scale s.
func normToken(t *testing.T, rng *rand.Rand, cols int, eps, scale float32) (x, w []float32, q []int8, s []float32) {
	x = randFloats(rng, uint32(cols))
	x[rng.IntN(cols)] = 7.5
	for i := range x {
		x[i] *= scale
	}
	w = randFloats(rng, uint32(cols))
	y := make([]float32, cols)
	require.NoError(t, cpuref.RMSNorm(y, x, w, eps))
	q = make([]int8, cols)
	sc, err := cpuref.QuantizeActivations(q, y)
	require.NoError(t, err)
	return x, w, q, []float32{sc}
}

// TestTernaryFusedNormParity: the one-token ternary GEMVs with the layer's input norm in their
// prologue (MatMulArgs.Norm — every workgroup computes RMSNorm and the int8 quantization of x
// itself, with rmsnorm_quant's code) give cpuref.RMSNorm → QuantizeActivations → BitLinear bit
// for bit: stacked q/k/v (TernaryMatMulStacked), gate/up with the GLU (TernaryGLU, ReLU² and
// SiLU), and q/k/v with RoPE and the f16 KV store (TernaryQKVRoPE, NEOX and NORM, replayed
// positions) — on every variant, with per-tensor and per-block scales, up to NormFuseMaxCols
// columns (the shared-memory activations full).
func TestTernaryFusedNormParity(t *testing.T) {
	cases := append(fusedCases[:len(fusedCases):len(fusedCases)], struct {
		name   string
		typ    model.TensorType
		blocks bool
		cols   int
	}{"i2_s-widest", model.TypeI2_S, false, NormFuseMaxCols})
	const eps = 1e-5
	for _, disable := range [][]string{nil, {"dot"}, {"subgroup-arithmetic"}} {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("ternary_gemv_norm"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(51, 52))
			for _, c := range cases {
				mat := func(rows int) *model.TernaryMatrix {
					m, _ := ternaryTensor(t, rng, rows, c.cols, c.typ, 0.0625+rng.Float32())
					return m
				}
				// Stacked q, k and v, over inputs of several magnitudes (at 1e-3 the epsilon
				// matters); the GLU and RoPE cases below take the last.
				rows := []int{40, 24, 16}
				mats := []*model.TernaryMatrix{mat(rows[0]), mat(rows[1]), mat(rows[2])}
				if c.blocks {
					mats[1] = blockScaleTensor(t, rng, rows[1], c.cols, c.typ)
				}
				oscales := []float32{0, 1.5, 0.75}
				words, sw, err := StackTernary("qkv", mats, oscales, false)
				require.NoError(t, err)
				sw.Buf = newBuf(t, d, words).Whole()
				var outs []SegmentOut
				var bys []*gpu.Buffer
				for i := range mats {
					by := zeroBuf(t, d, 4*(3+rows[i]))
					bys = append(bys, by)
					outs = append(outs, SegmentOut{Y: by.Whole(), YOff: 3, YStride: uint32(rows[i])})
				}
				var in *NormInput
				var q []int8
				var s []float32
				for _, scale := range []float32{1, 1e-3, 0.37, 30, 1, 2.5, 0.01, 1} {
					var x, w []float32
					x, w, q, s = normToken(t, rng, c.cols, eps, scale)
					in = &NormInput{X: newBuf(t, d, x).Whole(), W: newBuf(t, d, w).Whole(), Eps: eps}
					require.NoError(t, d.Run(func(seq *gpu.Sequence) error {
						return ks.TernaryMatMulStacked(seq, sw, gpu.Range{}, gpu.Range{}, MatMulArgs{T: 1, Norm: in}, outs)
					}))
					for i, m := range mats {
						want := bitLinear(t, m, q, s, oscales[i])
						got := readF32(t, bys[i], 3+rows[i])[3:]
						for j := range want {
							require.Equal(t, math.Float32bits(want[j]), math.Float32bits(got[j]), "%s scale %v stacked tensor %d row %d: cpu %v gpu %v", c.name, scale, i, j, want[j], got[j])
						}
					}
				}

				// One tensor adding into a residual (the o and down projections with their
				// sub-norm fused): y = residual + BitLinear, cpuref's Add after the projection.
				{
					om := mat(29)
					if c.blocks {
						om = blockScaleTensor(t, rng, 29, c.cols, c.typ)
					}
					words, w, err := StackTernary("o", []*model.TernaryMatrix{om}, []float32{0.5}, false)
					require.NoError(t, err)
					w.Buf = newBuf(t, d, words).Whole()
					res := make([]float32, 2+29)
					for i := range res {
						res[i] = rng.Float32()*8 - 4
					}
					by := newBuf(t, d, res)
					require.NoError(t, d.Run(func(seq *gpu.Sequence) error {
						return ks.TernaryMatMul(seq, w, gpu.Range{}, gpu.Range{}, by.Whole(), MatMulArgs{T: 1, YOff: 2, YStride: 29, Accumulate: true, Norm: in})
					}))
					lin := bitLinear(t, om, q, s, 0.5)
					got := readF32(t, by, 2+29)
					require.Equal(t, res[:2], got[:2], "%s: the floats before YOff are kept", c.name)
					for j, v := range lin {
						want := res[2+j] + v
						require.Equal(t, math.Float32bits(want), math.Float32bits(got[2+j]), "%s residual row %d: cpu %v gpu %v", c.name, j, want, got[2+j])
					}
				}

				// Gate and up with the GLU.
				const F = 37
				gu := []*model.TernaryMatrix{mat(F), mat(F)}
				if c.blocks {
					gu[0] = blockScaleTensor(t, rng, F, c.cols, c.typ)
				}
				words, gw, err := StackTernary("gate_up", gu, []float32{1.25, 0}, true)
				require.NoError(t, err)
				gw.Buf = newBuf(t, d, words).Whole()
				gate, up := bitLinear(t, gu[0], q, s, 1.25), bitLinear(t, gu[1], q, s, 0)
				for _, act := range []model.Activation{model.ActReLU2, model.ActSiLU} {
					want := make([]float32, F)
					if act == model.ActReLU2 {
						require.NoError(t, cpuref.ReLU2GLU(want, gate, up))
					} else {
						require.NoError(t, cpuref.SiLUGLU(want, gate, up))
					}
					by := zeroBuf(t, d, 4*(7+F))
					require.NoError(t, d.Run(func(seq *gpu.Sequence) error {
						return ks.TernaryGLU(seq, gw, gpu.Range{}, gpu.Range{}, by.Whole(), MatMulArgs{T: 1, YOff: 7, YStride: F, Norm: in}, act)
					}))
					got := readF32(t, by, 7+F)[7:]
					for i := range want {
						require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "%s %s row %d: cpu %v gpu %v", c.name, act, i, want[i], got[i])
					}
				}

				// q, k and v with RoPE and the KV store.
				for _, sh := range []struct {
					H, KVH, hd, ropeDim int
					mode                model.RoPEMode
				}{{4, 2, 16, 16, model.RoPENeox}, {2, 1, 32, 16, model.RoPENorm}} {
					rows := []int{sh.H * sh.hd, sh.KVH * sh.hd, sh.KVH * sh.hd}
					mats := []*model.TernaryMatrix{mat(rows[0]), mat(rows[1]), mat(rows[2])}
					if c.blocks {
						mats[2] = blockScaleTensor(t, rng, rows[2], c.cols, c.typ)
					}
					words, rw, err := StackTernaryRoPE("qkv", mats, oscales, sh.hd, sh.ropeDim, sh.mode)
					require.NoError(t, err)
					rw.Buf = newBuf(t, d, words).Whole()
					const ctx, base = 16, 10000
					cs := newBuf(t, d, RoPETable(ctx, sh.ropeDim, base))
					kvDim := rows[1]
					by := zeroBuf(t, d, 4*rows[0])
					kc, vc := zeroBuf(t, d, 2*ctx*kvDim), zeroBuf(t, d, 2*ctx*kvDim)
					seq, err := d.NewSequence()
					require.NoError(t, err)
					require.NoError(t, ks.TernaryQKVRoPE(seq, rw, gpu.Range{}, gpu.Range{}, by.Whole(), cs.Whole(), kc.Whole(), vc.Whole(),
						MatMulArgs{T: 1, YStride: uint32(rows[0]), Norm: in}, ctx, nil))
					lin := make([][]float32, 3)
					for i, m := range mats {
						lin[i] = bitLinear(t, m, q, s, oscales[i])
					}
					wantK, wantV := make([]uint16, ctx*kvDim), make([]uint16, ctx*kvDim)
					for _, pos := range []int{0, 5, ctx - 1} {
						require.NoError(t, seq.SetStep(0, uint32(pos)))
						require.NoError(t, seq.Submit())
						wq := append([]float32(nil), lin[0]...)
						require.NoError(t, cpuref.RoPE(wq, sh.H, sh.hd, sh.ropeDim, pos, base, sh.mode))
						got := readF32(t, by, rows[0])
						for i := range wq {
							require.Equal(t, math.Float32bits(wq[i]), math.Float32bits(got[i]), "%s %+v pos %d q %d: cpu %v gpu %v", c.name, sh, pos, i, wq[i], got[i])
						}
						wk := append([]float32(nil), lin[1]...)
						require.NoError(t, cpuref.RoPE(wk, sh.KVH, sh.hd, sh.ropeDim, pos, base, sh.mode))
						require.NoError(t, cpuref.StoreKV(wantK, pos, wk))
						require.NoError(t, cpuref.StoreKV(wantV, pos, lin[2]))
						gotK, err := gpu.Read[uint16](kc, 0, ctx*kvDim)
						require.NoError(t, err)
						gotV, err := gpu.Read[uint16](vc, 0, ctx*kvDim)
						require.NoError(t, err)
						require.Equal(t, wantK, gotK, "%s %+v k cache pos %d", c.name, sh, pos)
						require.Equal(t, wantV, gotV, "%s %+v v cache pos %d", c.name, sh, pos)
					}
					seq.Release()
				}
			}
		})
	}
}

// TestTernaryFusedNormErrors: the fused input norm takes one token, at most NormFuseMaxCols
// columns, and an input and a weight of Cols floats each.
func TestTernaryFusedNormErrors(t *testing.T) {
	d, ks := newKernels(t)
	rng := rand.New(rand.NewPCG(53, 54))
	m, _ := ternaryTensor(t, rng, 16, 256, model.TypeI2_S, 0.5)
	words, w, err := StackTernary("gate_up", []*model.TernaryMatrix{m, m}, nil, true)
	require.NoError(t, err)
	w.Buf = newBuf(t, d, words).Whole()
	x, short := newBuf(t, d, make([]float32, 256)), newBuf(t, d, make([]float32, 255))
	y := zeroBuf(t, d, 4*3*16)
	for _, c := range []struct {
		T     uint32
		w     *TernaryWeights
		x, nw gpu.Range
		want  string
	}{
		{3, w, x.Whole(), x.Whole(), "a fused input norm takes 1 token and at most 8192 columns, not 3 tokens and 256"},
		{1, &TernaryWeights{Name: "gate_up", Rows: 32, Cols: NormFuseMaxCols + 16, Segments: w.Segments, Interleaved: true, Buf: w.Buf}, x.Whole(), x.Whole(), "not 1 tokens and 8208"},
		{1, w, short.Whole(), x.Whole(), "operand 0 holds 1020 bytes, need 1024 for 256 elements"},
		{1, w, x.Whole(), short.Whole(), "operand 1 holds 1020 bytes, need 1024 for 256 elements"},
	} {
		err := d.Run(func(seq *gpu.Sequence) error {
			return ks.TernaryGLU(seq, c.w, gpu.Range{}, gpu.Range{}, y.Whole(), MatMulArgs{T: c.T, YStride: 16, Norm: &NormInput{X: c.x, W: c.nw}}, model.ActReLU2)
		})
		require.ErrorContains(t, err, c.want)
	}
}

// TestDecodeStructureSplitAttention: with a cache long enough that decode attention splits and
// merges on any device (1024 positions: 2 splits on a CPU device, 16 on a GPU), a ternary layer
// whose q/k/v take the fused RoPE/KV epilogue (head and rotary dims multiples of 4, as 2B4T's
// 128) records 6 dispatches with the norms fused (a GPU; forced here) — q/k/v with attn_norm,
// attention, its merge, o with attn_sub_norm, gate/up with ffn_norm, down with ffn_sub_norm —
// after the embedding gather, and the q8_0 head with the output norm fused into its GEMV
// (Q8Args.Norm) ends the step: 6·layers + 2 dispatches and 6·layers + 3 barriers (2B4T's 30
// layers: 182 and 183; one more each before the output norm was fused), one submit; a CPU device
// left to its policy keeps the four rmsnorm_quant a layer and the output norm's (10·layers + 3
// and 10·layers + 4: 303 and 304). The prefill step keeps the separate norms either way.
func TestDecodeStructureSplitAttention(t *testing.T) {
	for _, c := range []struct {
		typ   string
		force bool
		env   string
		want  bool
	}{{"discrete", false, "", true}, {"integrated", false, "", true}, {"cpu", false, "", false}, {"cpu", true, "", true},
		{"discrete", false, "0", false}, {"cpu", true, "0", false}, {"cpu", false, "1", true}} {
		got, err := fusedDecodeNorms(c.typ, c.force, c.env)
		require.NoError(t, err)
		require.Equal(t, c.want, got, "%+v", c)
	}
	_, err := fusedDecodeNorms("discrete", false, "yes")
	require.ErrorContains(t, err, `BITGPU_FUSED_NORMS="yes": want 0 or 1`)
	m := synthModel(t, model.TypeI2_S, func(o *model.SynthOptions) { o.Ctx = 1024 })
	dev := gputest.Open(t)
	require.Equal(t, "cpu", dev.Info().Type, "the CI drivers are CPU devices")
	layers := m.Config.Layers
	for _, fuse := range []bool{true, false} {
		g, err := NewGPU(dev, m, GPUOptions{Ctx: 1024, fuseNorms: fuse})
		require.NoError(t, err)
		require.Greater(t, g.attn.DecodeSplits(1024), uint32(1))
		_, err = g.Decode(1) // the first submit ends the recording (its last barrier)
		require.NoError(t, err)
		perLayer, tail := 10, 3 // tail: the gather, the output norm, the head
		if fuse {
			perLayer, tail = 6, 2 // the output norm fused into the head
		}
		disp, barriers, submits := g.DecodeStructure()
		require.Equal(t, perLayer*layers+tail, disp, "fused %v", fuse)
		require.Equal(t, perLayer*layers+tail+1, barriers, "fused %v", fuse)
		require.Equal(t, 1, submits)
		seq, err := g.record(3, nil)
		require.NoError(t, err)
		// Prefill: the gather, then 9 a layer (rmsnorm_quant ×2, qkv+rope_kv, attention, sub-norm,
		// o, gate/up+glu, sub-norm, down), the output norm and the head.
		require.Equal(t, 9*layers+3, seq.Dispatches())
		seq.Release()
		require.NoError(t, g.Close())
	}
	// BITGPU_FUSED_NORMS=0 keeps the norms apart even where the policy (forced here) fuses them.
	t.Setenv("BITGPU_FUSED_NORMS", "0")
	g, err := NewGPU(dev, m, GPUOptions{Ctx: 1024, fuseNorms: true})
	require.NoError(t, err)
	disp, _, _ := g.DecodeStructure()
	require.Equal(t, 10*layers+3, disp)
	require.NoError(t, g.Close())
	t.Setenv("BITGPU_FUSED_NORMS", "on")
	_, err = NewGPU(dev, m, GPUOptions{Ctx: 1024})
	require.ErrorContains(t, err, "BITGPU_FUSED_NORMS")
}

// TestGPUFusedNormsMatchCPU: the whole model with the decode step's norms fused into the q/k/v,
// o, gate/up and down GEMVs (forced on the CPU drivers, where the policy keeps them apart) gives
// cpuref's logits bit for bit — prefill (separate norms), then decode steps (fused) — with one
// scale per tensor (I2_S), per-block scales (TQ2_0) and both LM heads, and the on-device greedy
// step picks cpuref's tokens.
func TestGPUFusedNormsMatchCPU(t *testing.T) {
	prompt := []int{1, 72, 101, 108, 108, 111, 44, 32}
	for _, c := range []struct {
		typ    model.TensorType
		blocks bool
		head   cpuref.LMHead
	}{{model.TypeI2_S, false, cpuref.LMHeadQ8_0}, {model.TypeTQ2_0, true, cpuref.LMHeadF16}} {
		t.Run(c.typ.String(), func(t *testing.T) {
			m := synthModel(t, c.typ, func(o *model.SynthOptions) { o.BlockScales = c.blocks })
			g, err := NewGPU(gputest.Open(t), m, GPUOptions{Ctx: 64, LMHead: c.head, fuseNorms: true})
			require.NoError(t, err)
			defer g.Close()
			disp, _, _ := g.DecodeStructure()
			tail := 3 // the gather, the output norm, the head
			if c.head == cpuref.LMHeadQ8_0 {
				tail = 2 // the output norm fused into the q8_0 head's GEMV (Q8Args.Norm)
			}
			require.Equal(t, 5*m.Config.Layers+tail, disp, "the four norms of a layer are fused")
			cr, err := cpuref.New(m, 64, cpuref.WithLMHead(c.head))
			require.NoError(t, err)
			requireSameForward(t, cr, g, prompt, 6)
			g.Reset()
			cr.Reset()
			lc, err := cr.Prefill(prompt, false)
			require.NoError(t, err)
			_, err = g.Prefill(prompt, false)
			require.NoError(t, err)
			next := cpuref.Argmax(lc)
			for step := 0; step < 6; step++ {
				id, err := g.DecodeGreedy(next)
				require.NoError(t, err)
				lc, err = cr.Decode(next)
				require.NoError(t, err)
				next = cpuref.Argmax(lc)
				require.Equal(t, next, id, "greedy step %d", step)
			}
		})
	}
}
