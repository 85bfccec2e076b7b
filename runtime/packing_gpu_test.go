//go:build cgo

package runtime

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/model"
)

// packTo returns words (w's 2-bit layout) in packing p: PackTernaryBase3's layout for
// PackingBase3 (w updated), the words themselves otherwise.
func packTo(t *testing.T, words []uint32, w *TernaryWeights, p TernaryPacking) []uint32 {
	t.Helper()
	if p != PackingBase3 {
		return words
	}
	out, err := PackTernaryBase3(words, w)
	require.NoError(t, err)
	return out
}

// TestPackTernaryBase3Layout: every weight of the base-3 words, read back by the layout the
// shader header states — uvec4 r*3G + 3g + j, byte b, digit n → column 256g + 80j + 16n + b; the
// tail word of row r, block g at word N*12G + r*G + g in the 2-bit word layout — is the trit the
// tensor holds; the per-block scales follow unchanged at the new BlockScales; the size is
// TernaryWeights.Bytes plus the scales. A matrix of 320 columns, mismatched words and a code 3
// are refused.
func TestPackTernaryBase3Layout(t *testing.T) {
	rng := rand.New(rand.NewPCG(61, 62))
	for _, blocks := range []bool{false, true} {
		const rows, cols = 7, 768
		var m *model.TernaryMatrix
		if blocks {
			m = blockScaleTensor(t, rng, rows, cols, model.TypeTQ1_0)
		} else {
			m, _ = ternaryTensor(t, rng, rows, cols, model.TypeI2_S, 0.5)
		}
		words, w, err := StackTernary("w", []*model.TernaryMatrix{m}, nil, false)
		require.NoError(t, err)
		require.Equal(t, blocks, w.BlockScales != 0)
		scales := append([]uint32(nil), words[rows*cols/16:]...)
		out, err := PackTernaryBase3(words, w)
		require.NoError(t, err)
		require.Equal(t, PackingBase3, w.Packing)
		G := cols / 256
		require.EqualValues(t, rows*cols/256*52, w.Bytes())
		require.Len(t, out, int(w.Bytes())/4+len(scales))
		if blocks {
			require.EqualValues(t, rows*13*G, w.BlockScales)
			require.Equal(t, scales, out[w.BlockScales:])
		}
		trits := make([]int8, cols)
		for r := 0; r < rows; r++ {
			require.NoError(t, m.Row(r, trits, make([]float32, m.Groups())))
			for g := 0; g < G; g++ {
				for j := 0; j < 3; j++ {
					for b := 0; b < 16; b++ {
						by := byte(out[(r*3*G+3*g+j)*4+b/4] >> (8 * (b % 4)))
						for n := 0; n < 5; n++ {
							col := 256*g + 80*j + 16*n + b
							require.EqualValues(t, trits[col]+1, model.TQ1Trit(by, n)+1, "row %d col %d", r, col)
						}
					}
				}
				tail := out[rows*12*G+r*G+g]
				for c := 240; c < 256; c++ {
					rem := c - 240
					require.EqualValues(t, trits[256*g+c]+1, tail>>uint(2*(rem/4)+8*(rem%4))&3, "row %d col %d", r, 256*g+c)
				}
			}
		}
	}
	m, _ := ternaryTensor(t, rng, 4, 320, model.TypeI2_S, 0.5)
	words, w, err := StackTernary("w320", []*model.TernaryMatrix{m}, nil, false)
	require.NoError(t, err)
	_, err = PackTernaryBase3(words, w)
	require.ErrorContains(t, err, "w320: 320 columns")
	m, _ = ternaryTensor(t, rng, 4, 256, model.TypeI2_S, 0.5)
	words, w, err = StackTernary("w256", []*model.TernaryMatrix{m}, nil, false)
	require.NoError(t, err)
	_, err = PackTernaryBase3(words[1:], w)
	require.ErrorContains(t, err, "w256")
	words[5] |= 3 << 10
	_, err = PackTernaryBase3(words, w)
	require.ErrorContains(t, err, "code 3")
}

// packingCases are the single-matrix shapes of TestTernaryMatMulPackingParity: one and several
// 256-blocks (up to 10: more items than a subgroup has lanes), one scale per tensor (I2_S, TQ2_0)
// and per-block scales with runs (TQ1_0, TQ2_0); for the 2-bit layout also widths of more
// uvec4s than any variant has lanes (4096, 8192), a width of 5 uvec4s (320) and one whose K/16 is
// not a multiple of 4 (2576: word loads even with WideLoads).
var packingCases = []struct {
	rows, cols int
	typ        model.TensorType
	blocks     bool
	only2Bit   bool
}{
	{1, 256, model.TypeI2_S, false, false}, {9, 256, model.TypeTQ2_0, true, false},
	{37, 512, model.TypeTQ2_0, false, false}, {33, 768, model.TypeTQ1_0, true, false},
	{70, 2560, model.TypeI2_S, false, false}, {19, 2560, model.TypeTQ1_0, true, false},
	{11, 4096, model.TypeI2_S, false, true}, {5, 8192, model.TypeI2_S, false, true}, {8, 2576, model.TypeI2_S, false, true},
	{14, 320, model.TypeI2_S, false, true},
}

// TestTernaryMatMulPackingParity: in both layouts — 2-bit read a word a lane, 2-bit read a uvec4 a
// lane (WideLoads: PACKING 2), base-3 — TernaryMatMul gives cpuref.TernaryMatMul's bits — GEMV and GEMM
// (T = 1, 2, 3, 8, 11: every token tile, a partial last tile), written and accumulated, with and
// without an output scale, per-tensor and per-block scales — on every variant (dot, subgroup,
// shared).
func TestTernaryMatMulPackingParity(t *testing.T) {
	for _, disable := range packedVariants(t) {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("ternary_gemv"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(63, 64))
			for i, c := range packingCases {
				var m *model.TernaryMatrix
				if c.blocks {
					m = blockScaleTensor(t, rng, c.rows, c.cols, c.typ)
				} else {
					m, _ = ternaryTensor(t, rng, c.rows, c.cols, c.typ, 0.0625+rng.Float32())
				}
				for _, pk := range []struct {
					p    TernaryPacking
					wide bool
				}{{Packing2Bit, false}, {Packing2Bit, true}, {PackingBase3, false}} {
					p := pk.p
					if p == PackingBase3 && c.only2Bit {
						continue
					}
					words, w, err := StackTernary("w", []*model.TernaryMatrix{m}, nil, false)
					require.NoError(t, err)
					require.Equal(t, c.blocks, w.BlockScales != 0)
					bw := newBuf(t, d, packTo(t, words, w, p))
					w.Buf = bw.Whole()
					w.WideLoads = pk.wide
					oscale := []float32{0, 1.5}[i/2%2] // none, or a separate output scale (both with each scale kind)
					w.Segments[0].OutScale = oscale
					for _, T := range []int{1, 2, 3, 8, 11} {
						q, s, sq := quantTokens(t, rng, T, c.cols)
						want := bitLinear(t, m, q, s, oscale)
						requireTernaryMatMul(t, d, ks, w, q, sq, want, randFloats(rng, uint32(T*c.rows)),
							fmt.Sprintf("%s wide %v %s %dx%d blocks %v T=%d oscale %v", p, pk.wide, c.typ, c.rows, c.cols, c.blocks, T, oscale))
					}
					bw.Release()
				}
			}
		})
	}
}

// TestTernaryFusedBase3Parity: the fused kernels on base-3 weights give cpuref's bits as they do
// on 2-bit ones — stacked q/k/v (TernaryMatMulStacked; T = 1, 2, 3, 8, 11), interleaved gate/up
// with the GLU (both activations), q/k/v with RoPE and the KV store (both modes, a partial rotary
// dimension, several positions), and each of them with the input norm in the prologue (one
// token) — one scale per tensor and per-block scales (one tensor with runs among ones repeated
// per block), on every variant.
func TestTernaryFusedBase3Parity(t *testing.T) {
	for _, disable := range packedVariants(t) {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("ternary_gemv"), func(t *testing.T) { fusedBase3Parity(t, d, ks) })
	}
}

// TestTernaryUnitsMapping: the subgroup variants cover the units (rows, GLU pairs, RoPE quads)
// the host sizes the grid by (Kernels.units, BITGPU_GEMV_UNITS), whatever the number of subgroups
// the driver makes of a workgroup — fewer units than subgroups (3), more (100: lavapipe's 32 and
// SwiftShader's 64 subgroups take several in turn) — with TestTernaryFusedBase3Parity's cases,
// cpuref's bits; a bad override is an error naming the variable.
func TestTernaryUnitsMapping(t *testing.T) {
	t.Setenv("BITGPU_GEMV_UNITS", "300")
	_, err := NewKernels(gputest.Open(t))
	require.ErrorContains(t, err, `BITGPU_GEMV_UNITS="300": want a whole number from 1 to 256`)
	units := []uint32{3, 100}
	if onSwiftShader(t) {
		units = units[1:] // (the time the software driver takes; lavapipe runs both)
	}
	for _, units := range units {
		t.Setenv("BITGPU_GEMV_UNITS", fmt.Sprint(units))
		d, ks := newKernels(t)
		require.Equal(t, units, ks.rowsPerGroup("ternary_gemv"), ks.Variant("ternary_gemv"))
		t.Run(fmt.Sprintf("units=%d", units), func(t *testing.T) { fusedBase3Parity(t, d, ks) })
	}
	for _, c := range []struct {
		sub  uint32
		want uint32
	}{{32, 8}, {64, 4}, {8, 32}, {4, 64}, {0, 1}} {
		got, err := gemvUnits(gpu.Info{SubgroupSize: c.sub}, "")
		require.NoError(t, err)
		require.Equal(t, c.want, got, "subgroup %d", c.sub)
	}
	for _, bad := range []string{"0", "-1", "x", "257"} {
		_, err := gemvUnits(gpu.Info{SubgroupSize: 32}, bad)
		require.ErrorContains(t, err, "BITGPU_GEMV_UNITS")
	}
}

// onSwiftShader reports whether the tests run on SwiftShader, whose pipeline compilation and
// shaders are several times slower than lavapipe's: the heaviest packing tests run a subset of
// their variants there (lavapipe, in the same make test, runs them all).
func onSwiftShader(t *testing.T) bool {
	return strings.Contains(strings.ToLower(gputest.Open(t).Info().Driver), "swiftshader")
}

// packedVariants are the feature sets (BITGPU_DISABLE lists) the packing parity tests build
// kernels for: the dot-product, subgroup and shared-memory variants — on SwiftShader only the
// first: the base-3 and uvec4 paths are code every variant shares, while what differs (dot4,
// rowSum) the 2-bit tests hold on every variant and both drivers.
func packedVariants(t *testing.T) [][]string {
	all := [][]string{nil, {"dot"}, {"subgroup-arithmetic"}}
	if onSwiftShader(t) {
		return all[:1]
	}
	return all
}

// fusedBase3Parity is TestTernaryFusedBase3Parity's cases on one device's kernels.
func fusedBase3Parity(t *testing.T, d *gpu.Device, ks *Kernels) {
	const eps = 1e-5
	rng := rand.New(rand.NewPCG(65, 66))
	for _, c := range []struct {
		name   string
		typ    model.TensorType
		blocks bool
		cols   int
	}{{"i2_s", model.TypeI2_S, false, 512}, {"block-scales", model.TypeTQ1_0, true, 1536}} {
		mat := func(rows int, blocks bool) *model.TernaryMatrix {
			if blocks {
				return blockScaleTensor(t, rng, rows, c.cols, c.typ)
			}
			m, _ := ternaryTensor(t, rng, rows, c.cols, model.TypeI2_S, 0.0625+rng.Float32())
			return m
		}
		upload := func(words []uint32, w *TernaryWeights) {
			w.Buf = newBuf(t, d, packTo(t, words, w, PackingBase3)).Whole()
			require.Equal(t, PackingBase3, w.Packing)
		}
		// Each case runs over tokens given either as activations (ba, bsq; norm nil) or,
		// for one token, as the input of the fused norm.
		type tokens struct {
			q     []int8
			s     []float32
			a, sq gpu.Range
			norm  *NormInput
		}
		var toks []tokens
		for _, T := range []int{1, 2, 3, 8, 11} {
			q, s, sq := quantTokens(t, rng, T, c.cols)
			toks = append(toks, tokens{q: q, s: s, a: newBuf(t, d, PackInt8(q)).Whole(), sq: newBuf(t, d, sq).Whole()})
		}
		for _, scale := range []float32{1, 1e-3} {
			x, nw, q, s := normToken(t, rng, c.cols, eps, scale)
			toks = append(toks, tokens{q: q, s: s, norm: &NormInput{X: newBuf(t, d, x).Whole(), W: newBuf(t, d, nw).Whole(), Eps: eps}})
		}

		// Stacked q, k and v.
		rows := []int{40, 24, 16}
		mats := []*model.TernaryMatrix{mat(rows[0], false), mat(rows[1], c.blocks), mat(rows[2], false)}
		oscales := []float32{0, 1.5, 0.75}
		words, sw, err := StackTernary("qkv", mats, oscales, false)
		require.NoError(t, err)
		upload(words, sw)
		for _, tk := range toks {
			T := len(tk.s)
			var outs []SegmentOut
			var bys []*gpu.Buffer
			for i := range mats {
				by := zeroBuf(t, d, 4*(3+T*rows[i]))
				bys = append(bys, by)
				outs = append(outs, SegmentOut{Y: by.Whole(), YOff: 3, YStride: uint32(rows[i])})
			}
			require.NoError(t, d.Run(func(seq *gpu.Sequence) error {
				return ks.TernaryMatMulStacked(seq, sw, tk.a, tk.sq, MatMulArgs{T: uint32(T), Norm: tk.norm}, outs)
			}))
			for i, m := range mats {
				want := bitLinear(t, m, tk.q, tk.s, oscales[i])
				got := readF32(t, bys[i], 3+T*rows[i])[3:]
				for j := range want {
					require.Equal(t, math.Float32bits(want[j]), math.Float32bits(got[j]), "%s stacked T=%d norm %v tensor %d i=%d: cpu %v gpu %v", c.name, T, tk.norm != nil, i, j, want[j], got[j])
				}
			}
		}

		// Gate and up with the GLU.
		const F = 37
		gu := []*model.TernaryMatrix{mat(F, c.blocks), mat(F, false)}
		words, gw, err := StackTernary("gate_up", gu, []float32{1.25, 0}, true)
		require.NoError(t, err)
		upload(words, gw)
		for _, tk := range toks {
			T := len(tk.s)
			gate, up := bitLinear(t, gu[0], tk.q, tk.s, 1.25), bitLinear(t, gu[1], tk.q, tk.s, 0)
			for _, act := range []model.Activation{model.ActReLU2, model.ActSiLU} {
				want := make([]float32, T*F)
				if act == model.ActReLU2 {
					require.NoError(t, cpuref.ReLU2GLU(want, gate, up))
				} else {
					require.NoError(t, cpuref.SiLUGLU(want, gate, up))
				}
				by := zeroBuf(t, d, 4*(7+T*F))
				require.NoError(t, d.Run(func(seq *gpu.Sequence) error {
					return ks.TernaryGLU(seq, gw, tk.a, tk.sq, by.Whole(), MatMulArgs{T: uint32(T), YOff: 7, YStride: F, Norm: tk.norm}, act)
				}))
				got := readF32(t, by, 7+T*F)[7:]
				for i := range want {
					require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "%s %s T=%d norm %v i=%d: cpu %v gpu %v", c.name, act, T, tk.norm != nil, i, want[i], got[i])
				}
			}
		}

		// q, k and v with RoPE and the KV store.
		for _, sh := range []struct {
			H, KVH, hd, ropeDim int
			mode                model.RoPEMode
		}{{4, 2, 16, 16, model.RoPENeox}, {2, 1, 32, 16, model.RoPENorm}} {
			rows := []int{sh.H * sh.hd, sh.KVH * sh.hd, sh.KVH * sh.hd}
			mats := []*model.TernaryMatrix{mat(rows[0], false), mat(rows[1], c.blocks), mat(rows[2], false)}
			words, rw, err := StackTernaryRoPE("qkv", mats, oscales, sh.hd, sh.ropeDim, sh.mode)
			require.NoError(t, err)
			upload(words, rw)
			const ctx, base = 24, 10000
			cs := newBuf(t, d, RoPETable(ctx, sh.ropeDim, base))
			kvDim := rows[1]
			for _, tk := range toks {
				T := len(tk.s)
				if T > 3 && tk.norm == nil && T != 8 {
					continue // 1, 2, 3 and a full tile are enough here
				}
				by := zeroBuf(t, d, 4*T*rows[0])
				kc, vc := zeroBuf(t, d, 2*ctx*kvDim), zeroBuf(t, d, 2*ctx*kvDim)
				seq, err := d.NewSequence()
				require.NoError(t, err)
				require.NoError(t, ks.TernaryQKVRoPE(seq, rw, tk.a, tk.sq, by.Whole(), cs.Whole(), kc.Whole(), vc.Whole(),
					MatMulArgs{T: uint32(T), YStride: uint32(rows[0]), Norm: tk.norm}, ctx, nil))
				lin := make([][]float32, 3)
				for i, m := range mats {
					lin[i] = bitLinear(t, m, tk.q, tk.s, oscales[i])
				}
				wantK, wantV := make([]uint16, ctx*kvDim), make([]uint16, ctx*kvDim)
				for _, pos0 := range []int{0, 7, ctx - T} {
					require.NoError(t, seq.SetStep(0, uint32(pos0)))
					require.NoError(t, seq.Submit())
					got := readF32(t, by, T*rows[0])
					for tok := 0; tok < T; tok++ {
						wq := append([]float32(nil), lin[0][tok*rows[0]:(tok+1)*rows[0]]...)
						require.NoError(t, cpuref.RoPE(wq, sh.H, sh.hd, sh.ropeDim, pos0+tok, base, sh.mode))
						for i := range wq {
							require.Equal(t, math.Float32bits(wq[i]), math.Float32bits(got[tok*rows[0]+i]), "%s %+v T=%d norm %v pos %d q %d", c.name, sh, T, tk.norm != nil, pos0+tok, i)
						}
						wk := append([]float32(nil), lin[1][tok*kvDim:(tok+1)*kvDim]...)
						require.NoError(t, cpuref.RoPE(wk, sh.KVH, sh.hd, sh.ropeDim, pos0+tok, base, sh.mode))
						require.NoError(t, cpuref.StoreKV(wantK, pos0+tok, wk))
						require.NoError(t, cpuref.StoreKV(wantV, pos0+tok, lin[2][tok*kvDim:(tok+1)*kvDim]))
					}
					gotK, err := gpu.Read[uint16](kc, 0, ctx*kvDim)
					require.NoError(t, err)
					gotV, err := gpu.Read[uint16](vc, 0, ctx*kvDim)
					require.NoError(t, err)
					require.Equal(t, wantK, gotK, "%s %+v k cache T=%d norm %v pos0 %d", c.name, sh, T, tk.norm != nil, pos0)
					require.Equal(t, wantV, gotV, "%s %+v v cache T=%d norm %v pos0 %d", c.name, sh, T, tk.norm != nil, pos0)
				}
				seq.Release()
				for _, b := range []*gpu.Buffer{by, kc, vc} {
					b.Release()
				}
			}
			cs.Release()
		}
	}
}

// TestTernaryBase3Refusals: base-3 weights of a width that is not whole 256-blocks, or an unknown
// packing, are refused at dispatch naming the tensor.
func TestTernaryBase3Refusals(t *testing.T) {
	d, ks := newKernels(t)
	for _, c := range []struct {
		w    *TernaryWeights
		want string
	}{
		{&TernaryWeights{Name: "w320", Rows: 4, Cols: 320, Scale: 1, Packing: PackingBase3}, `w320: packing "base3" of a matrix with 320 columns (base3 needs a multiple of 256)`},
		{&TernaryWeights{Name: "wbad", Rows: 4, Cols: 256, Scale: 1, Packing: "base4"}, `wbad: unknown packing "base4" (want "2bit" or "base3")`},
	} {
		err := d.Run(func(s *gpu.Sequence) error {
			return ks.TernaryMatMul(s, c.w, gpu.Range{}, gpu.Range{}, gpu.Range{}, MatMulArgs{T: 1})
		})
		require.ErrorContains(t, err, c.want)
	}
}

// TestResolvePacking: the tuning table gives 2-bit with word loads to CPU-type devices (lavapipe,
// SwiftShader) and unknown types, base-3 (and 128-bit loads of 2-bit matrices) to discrete and
// integrated GPUs; an explicit packing wins; a test
// device's GPU backend reports what it resolved.
func TestResolvePacking(t *testing.T) {
	for typ, want := range map[string]TernaryPacking{"cpu": Packing2Bit, "discrete": PackingBase3, "integrated": PackingBase3, "virtual": Packing2Bit, "other": Packing2Bit} {
		require.Equal(t, want, resolvePacking(PackingAuto, gpu.Info{Type: typ, VendorID: 0x10de, SubgroupSize: 32}), typ)
		require.Equal(t, want == PackingBase3, deviceRule(gpu.Info{Type: typ, VendorID: 0x1002, SubgroupSize: 64}).WideLoads, "%s: 128-bit loads on GPUs", typ)
		require.Equal(t, want, resolvePacking("", gpu.Info{Type: typ}), typ)
		require.Equal(t, Packing2Bit, resolvePacking(Packing2Bit, gpu.Info{Type: typ}))
		require.Equal(t, PackingBase3, resolvePacking(PackingBase3, gpu.Info{Type: typ}))
	}
	m := synthModel(t, model.TypeI2_S, func(o *model.SynthOptions) { o.Layers = 1 })
	dev := gputest.Open(t)
	g, err := NewGPU(dev, m, GPUOptions{Ctx: 16})
	require.NoError(t, err)
	require.Equal(t, resolvePacking(PackingAuto, dev.Info()), g.Packing())
	require.NoError(t, g.Close())
	m16 := synthModel(t, model.TypeF16, func(o *model.SynthOptions) { o.Layers = 1 })
	g, err = NewGPU(dev, m16, GPUOptions{Ctx: 16, Packing: PackingBase3})
	require.NoError(t, err)
	require.Equal(t, TernaryPacking(""), g.Packing(), "F16 projections: no ternary layout")
	require.NoError(t, g.Close())
	_, err = NewGPU(dev, m, GPUOptions{Ctx: 16, Packing: "tq1"})
	require.ErrorContains(t, err, "--ternary-packing")
}

// TestGPUMatchesCPUBase3: whole models with every ternary projection in the base-3 layout give
// cpuref's logits bit for bit, prefill and decode, for every synthetic family (model.SynthFamilies)
// with one scale per tensor (I2_S) and per-block scales with runs (TQ1_0), and for the 2b4t
// layout with TQ2_0 weights and the decode step's input norms fused (fuseNorms). The memory plan
// is PlanMemoryPacked's, exactly ProjectionBytes' difference (36,864 bytes for a layer of the tiny
// shapes: 786,432 weights at 52 instead of 64 bytes per 256) below the 2-bit model's, whose
// logits — read with 128-bit loads, forced, as CI's drivers do not get them by default — are the
// same.
func TestGPUMatchesCPUBase3(t *testing.T) {
	prompt := []int{1, 40, 41, 72, 101, 108, 108, 111, 32}
	swift := onSwiftShader(t)
	for _, fam := range model.SynthFamilies {
		if swift && fam != "2b4t" && fam != model.SynthFamilies[len(model.SynthFamilies)-1] {
			continue // the time the software driver takes: two families there, all on lavapipe
		}
		for _, c := range []struct {
			typ    model.TensorType
			blocks bool
			fuse   bool
		}{{model.TypeI2_S, false, false}, {model.TypeTQ1_0, true, false}, {model.TypeTQ2_0, false, true}} {
			if c.fuse && fam != "2b4t" {
				continue
			}
			t.Run(fmt.Sprintf("%s/%s/blocks=%v/fuse=%v", fam, c.typ, c.blocks, c.fuse), func(t *testing.T) {
				m := synthModel(t, c.typ, func(o *model.SynthOptions) { o.Family = fam; o.BlockScales = c.blocks; o.Layers = 1 })
				dev := gputest.Open(t)
				g, err := NewGPU(dev, m, GPUOptions{Ctx: 64, Packing: PackingBase3, fuseNorms: c.fuse})
				require.NoError(t, err)
				defer g.Close()
				require.Equal(t, PackingBase3, g.Packing())
				for _, l := range g.layers {
					for _, p := range []projection{l.qkv, l.o, l.gateUp, l.down} {
						require.Equal(t, PackingBase3, p.tern.Packing, p.tern.Name)
					}
				}
				cr, err := cpuref.New(m, 64)
				require.NoError(t, err)
				requireSameForward(t, cr, g, prompt, 4)
				if c.typ != model.TypeI2_S {
					return
				}
				require.Equal(t, PlanMemoryPacked(m.Config, 64, false, "", PackingBase3), g.Plan())
				// 2-bit read as uvec4s, with the decode norms fused as on a discrete GPU (auto's
				// choice there for 2-bit matrices).
				g2, err := NewGPU(dev, m, GPUOptions{Ctx: 64, Packing: Packing2Bit, wideLoads: true, fuseNorms: true})
				require.NoError(t, err)
				defer g2.Close()
				require.True(t, g2.layers[0].down.tern.WideLoads)
				cr.Reset()
				requireSameForward(t, cr, g2, prompt[:5], 2)
				require.EqualValues(t, 36_864, g2.Plan().Weights-g.Plan().Weights)
				require.Equal(t, g2.Plan().KVCache, g.Plan().KVCache)
				require.Equal(t, g2.Plan().Scratch, g.Plan().Scratch)
			})
		}
	}
}
