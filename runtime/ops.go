//go:build cgo

package runtime

import (
	"fmt"
	"math"
	"strings"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
)

// GEMMTokens is the token tile of the prefill kernels: each weight word read from memory serves
// this many tokens. Products over 2 to 4 tokens (the batched decode step of a few sequences) use
// a tile of 2 or 4 instead (gemmTile).
const GEMMTokens = 8

func subgroupArith(f gpu.Features) bool   { return f.SubgroupArithmetic }
func subgroupShuffle(f gpu.Features) bool { return f.SubgroupShuffle }
func dotAndSubgroup(f gpu.Features) bool {
	return f.IntegerDotProduct && f.SubgroupArithmetic
}

func init() {
	// ternaryVariants are the dot-product, subgroup and shared-memory builds of one
	// ternary_matmul shader (prefix "ternary_matmul" plus a feature suffix), best first.
	ternaryVariants := func(prefix string) []variant {
		return []variant{
			{spv: prefix + "_dot", need: dotAndSubgroup},
			{spv: prefix + "_subgroup", need: subgroupArith},
			{spv: prefix + "_shared"},
		}
	}
	ternary := func() []variant { return ternaryVariants("ternary_matmul") }
	ternaryRoPE := ternaryVariants("ternary_matmul_rope")
	ternaryNorm := ternaryVariants("ternary_matmul_norm")
	ternaryRoPENorm := ternaryVariants("ternary_matmul_rope_norm")
	f16 := []variant{{spv: "f16_matvec_subgroup", need: subgroupShuffle}, {spv: "f16_matvec_shared"}}
	kernelDefs = append(kernelDefs,
		kernelDef{name: "rmsnorm", variants: []variant{{spv: "rmsnorm"}}, bindings: 3, outputs: []int{2}, push: 28, local: cpuref.NormLanes},
		kernelDef{name: "rmsnorm_quant", variants: []variant{{spv: "rmsnorm_quant"}}, bindings: 4, outputs: []int{2, 3}, push: 28, local: cpuref.NormLanes},
		kernelDef{name: "quantize", variants: []variant{{spv: "quantize"}}, bindings: 3, outputs: []int{1, 2}, push: 28, local: cpuref.NormLanes},
		kernelDef{name: "ternary_gemv", variants: ternary(), bindings: 6, outputs: []int{3, 4, 5}, push: 88, spec: []uint32{1}, units: true},
		kernelDef{name: "ternary_gemm", variants: ternary(), bindings: 6, outputs: []int{3, 4, 5}, push: 88, spec: []uint32{GEMMTokens}, units: true},
		kernelDef{name: "ternary_gemv_glu", variants: ternary(), bindings: 6, outputs: []int{3, 4, 5}, push: 88, spec: []uint32{1, 1}, units: true},
		kernelDef{name: "ternary_gemm_glu", variants: ternary(), bindings: 6, outputs: []int{3, 4, 5}, push: 88, spec: []uint32{GEMMTokens, 1}, units: true},
		kernelDef{name: "ternary_gemv_rope", variants: ternaryRoPE, bindings: 10, outputs: []int{3, 4, 5, 7, 8}, push: 116, spec: []uint32{1}, units: true},
		kernelDef{name: "ternary_gemm_rope", variants: ternaryRoPE, bindings: 10, outputs: []int{3, 4, 5, 7, 8}, push: 116, spec: []uint32{GEMMTokens}, units: true},
		kernelDef{name: "ternary_gemv_norm", variants: ternaryNorm, bindings: 6, outputs: []int{3, 4, 5}, push: 92, spec: []uint32{1}, units: true},
		kernelDef{name: "ternary_gemv_glu_norm", variants: ternaryNorm, bindings: 6, outputs: []int{3, 4, 5}, push: 92, spec: []uint32{1, 1}, units: true},
		kernelDef{name: "ternary_gemv_rope_norm", variants: ternaryRoPENorm, bindings: 10, outputs: []int{3, 4, 5, 7, 8}, push: 120, spec: []uint32{1}, units: true},
		kernelDef{name: "f16_gemv", variants: f16, bindings: 3, outputs: []int{2}, push: 32, spec: []uint32{1}},
		kernelDef{name: "f16_gemm", variants: f16, bindings: 3, outputs: []int{2}, push: 32, spec: []uint32{GEMMTokens}},
		kernelDef{name: "rope_kv", variants: []variant{{spv: "rope_kv"}}, bindings: 7, outputs: []int{0, 4, 5}, push: 48},
		kernelDef{name: "glu", variants: []variant{{spv: "glu"}}, bindings: 2, outputs: []int{0}, push: 8},
	)
}

// rowsPerGroup is how many output rows (units: GLU pairs, RoPE quads) one workgroup of the
// matmul kernels covers: 32 invocations per row for the F16 kernels (cpuref.LogitLanes, the
// canonical lane count) and the shared-memory ternary kernels; ks.units (gemvUnits) for the
// subgroup ternary kernels, whose subgroups take the units in turn whatever their size; one
// subgroup per row (workgroups of 256) for the rest.
func (ks *Kernels) rowsPerGroup(kernel string) uint32 {
	v := ks.variant[kernel]
	switch v {
	case "ternary_matmul_shared", "ternary_matmul_rope_shared", "ternary_matmul_norm_shared", "ternary_matmul_rope_norm_shared", "f16_matvec_subgroup", "f16_matvec_shared":
		return 256 / cpuref.LogitLanes
	}
	if strings.HasPrefix(v, "ternary_matmul") {
		return ks.units
	}
	return 256 / ks.dev.Info().SubgroupSize
}

// RMSNormArgs places the T tokens of an RMSNorm: token t reads x[XOff + t*XStride ...] (floats)
// and writes at OutOff + t*OutStride (int8-quad words for RMSNormQuant, floats for RMSNorm);
// RMSNormQuant writes token t's (scale, Σq) pair at slot SOff + t.
type RMSNormArgs struct {
	D, T              uint32
	XOff, XStride     uint32
	OutOff, OutStride uint32
	SOff              uint32
	Eps               float32
}

func (a RMSNormArgs) push() []uint32 {
	return []uint32{a.D, a.XOff, a.XStride, a.OutOff, a.OutStride, a.SOff, gpu.F32(a.Eps)}
}

// RMSNormQuant records RMSNorm of T tokens of width D (x [T][D] f32, weights w [D]) fused with the
// BitNet per-token int8 quantization: q gets the int8 values packed four per uint32
// ([T][D/4] words), sq the pair (Rcp32(s) as f32 bits, Σq as int32) per token. Both kernels give
// cpuref.RMSNorm's and cpuref.QuantizeActivations' bits exactly (canonical sum order, numerics.glsl). D must be a multiple of 4.
func (ks *Kernels) RMSNormQuant(s *gpu.Sequence, x, w, q, sq gpu.Range, a RMSNormArgs) error {
	if a.D%4 != 0 || a.D == 0 || a.T == 0 {
		return fmt.Errorf("rmsnorm_quant: width %d must be a positive multiple of 4 and tokens %d positive", a.D, a.T)
	}
	return ks.dispatch(s, "rmsnorm_quant", [3]uint32{a.T, 1, 1}, a.push(), x, w, q, sq)
}

// Quantize records the BitNet per-token int8 quantization of T tokens of width D (x [T][D] f32)
// without a norm before it — the input of a BitLinear that has no sub-norm (llama-arch ternary
// models) — with RMSNormQuant's outputs: q packed four per uint32 ([T][D/4] words) and the pair
// (Rcp32(s) bits, Σq) per token, cpuref.QuantizeActivations' bits exactly. a.Eps and a.D's norm
// role are unused; D must be a positive multiple of 4.
func (ks *Kernels) Quantize(s *gpu.Sequence, x, q, sq gpu.Range, a RMSNormArgs) error {
	if a.D%4 != 0 || a.D == 0 || a.T == 0 {
		return fmt.Errorf("quantize: width %d must be a positive multiple of 4 and tokens %d positive", a.D, a.T)
	}
	return ks.dispatch(s, "quantize", [3]uint32{a.T, 1, 1}, a.push(), x, q, sq)
}

// RMSNorm records RMSNorm of T tokens of width D into y (f32).
func (ks *Kernels) RMSNorm(s *gpu.Sequence, x, w, y gpu.Range, a RMSNormArgs) error {
	if a.D == 0 || a.T == 0 {
		return fmt.Errorf("rmsnorm: width %d and tokens %d must be positive", a.D, a.T)
	}
	return ks.dispatch(s, "rmsnorm", [3]uint32{a.T, 1, 1}, a.push(), x, w, y)
}

// TernaryWeights is a ternary matrix on the device in bitgpu's GPU layout (see RepackTernary):
// Rows outputs, Cols inputs, one per-tensor weight scale, and the optional separate output scale
// of `bitnet`-architecture models (the `*.scale` tensor next to the weight; 0 or 1 means none).
// A tensor whose 256-column blocks carry different scales (RepackTernaryBlocks) has BlockScales,
// the index of the uint32 word of Buf where its Rows*Cols/256 per-block f32 scales start (row by
// row, after the trit words); 0 means one scale, Scale.
//
// A stacked matrix (StackTernary) holds several tensors with the same columns — q, k and v, or
// gate and up — for one dispatch: Segments lists them in row order (Scale and OutScale are then
// unused), and Interleaved means two tensors of equal rows stored alternately (row 2i of the
// first, then row i of the second: the fused GLU's layout, TernaryGLU).
//
// Packing is the layout of the trits in Buf: "" or Packing2Bit, RepackTernary's 2-bit words
// (Rows*Cols/16 of them); PackingBase3, PackTernaryBase3's base-3 layout (Rows*Cols/256*13 words;
// Cols a multiple of 256). BlockScales counts words of whichever layout it is. WideLoads makes
// the kernels read 2-bit words 128 bits (4 words) a lane at a time where Cols is a multiple of 64
// (the per-device choice of packingTable; the same bits, only the load width differs).
type TernaryWeights struct {
	Name        string
	Rows, Cols  uint32
	Scale       float32
	OutScale    float32
	BlockScales uint32
	Buf         gpu.Range
	Segments    []TernarySegment
	Interleaved bool
	RoPE        *RoPELayout
	Packing     TernaryPacking
	WideLoads   bool
}

// RoPELayout marks a stacked q, k and v (StackTernaryRoPE) whose rows are ordered for the fused
// RoPE/KV-store epilogue (TernaryQKVRoPE): HeadDim and RoPEDim (both multiples of 4) and the
// rotation Mode the order was made for.
type RoPELayout struct {
	HeadDim, RoPEDim uint32
	Mode             model.RoPEMode
}

// RoPEFusable reports whether StackTernaryRoPE can order q/k/v rows of heads of headDim with
// ropeDim rotated elements: both positive multiples of 4, ropeDim <= headDim.
func RoPEFusable(headDim, ropeDim int) bool {
	return headDim > 0 && ropeDim > 0 && headDim%4 == 0 && ropeDim%4 == 0 && ropeDim <= headDim
}

// ropeElem is the element of its head that row j (0..3) of quad n of the head holds in the
// StackTernaryRoPE order (ternary_matmul.comp's header): NEOX in the rotary range 2n, 2n+1,
// 2n+half, 2n+half+1 (the two rotation pairs), else 4n+j.
func ropeElem(l RoPELayout, n, j int) int {
	if l.Mode == model.RoPENeox && 4*n < int(l.RoPEDim) {
		return 2*n + j&1 + (j>>1)*int(l.RoPEDim)/2
	}
	return 4*n + j
}

// StackTernaryRoPE is StackTernary for a layer's q, k and v (not interleaved) with the rows of
// every head reordered in quads for the fused RoPE and KV store (TernaryQKVRoPE): stacked row
// head*headDim + 4n + j of each tensor is its row head*headDim + e, e the element of quad n, slot
// j (NEOX in the rotary range: 2n, 2n+1, 2n+rope/2, 2n+rope/2+1; else 4n+j), per-block scales
// moved with their rows. Each row keeps its own arithmetic; only where it is written changes.
func StackTernaryRoPE(name string, mats []*model.TernaryMatrix, outScales []float32, headDim, ropeDim int, mode model.RoPEMode) ([]uint32, *TernaryWeights, error) {
	if len(mats) != 3 || !RoPEFusable(headDim, ropeDim) || (mode != model.RoPENeox && mode != model.RoPENorm) {
		return nil, nil, fmt.Errorf("%s: fused RoPE needs q, k and v (%d tensors), head and rope dims multiples of 4 (%d, %d) and a known mode (%d)", name, len(mats), headDim, ropeDim, mode)
	}
	for _, m := range mats {
		if m.Rows%headDim != 0 {
			return nil, nil, fmt.Errorf("%s: tensor %s has %d rows, not whole heads of %d", name, m.Name, m.Rows, headDim)
		}
	}
	if mats[1].Rows != mats[2].Rows {
		return nil, nil, fmt.Errorf("%s: k has %d rows, v %d; the caches need them equal", name, mats[1].Rows, mats[2].Rows)
	}
	words, w, err := StackTernary(name, mats, outScales, false)
	if err != nil {
		return nil, nil, err
	}
	l := RoPELayout{HeadDim: uint32(headDim), RoPEDim: uint32(ropeDim), Mode: mode}
	nw := int(w.Cols) / 16
	G := int(w.Cols) / 256
	src := append([]uint32(nil), words...)
	for r := 0; r < int(w.Rows); r++ { // stacked row r takes row from of the plain stacking
		head, within := r/headDim, r%headDim
		from := head*headDim + ropeElem(l, within/4, within%4)
		copy(words[r*nw:(r+1)*nw], src[from*nw:(from+1)*nw])
		if w.BlockScales != 0 {
			b := int(w.BlockScales)
			copy(words[b+r*G:b+(r+1)*G], src[b+from*G:b+(from+1)*G])
		}
	}
	w.RoPE = &l
	return words, w, nil
}

// TernarySegment is one tensor of a stacked TernaryWeights: its rows, per-tensor weight scale
// and separate output scale (0 or 1: none).
type TernarySegment struct {
	Name            string
	Rows            uint32
	Scale, OutScale float32
}

// segments returns w's tensors: its Segments, or w itself as the one segment.
func (w *TernaryWeights) segments() []TernarySegment {
	if len(w.Segments) > 0 {
		return w.Segments
	}
	return []TernarySegment{{Name: w.Name, Rows: w.Rows, Scale: w.Scale, OutScale: w.OutScale}}
}

// StackTernary repacks up to three ternary matrices with the same columns into one device matrix
// (RepackTernaryBlocks' layout) for a single dispatch: their rows one after the other or, with
// interleave (two matrices of equal rows), alternately. outScales are the tensors' separate output
// scales (nil: none). When any of them carries per-block scales, every one is stored with
// per-block scales — a tensor with one scale repeats it in each block, which the kernel's
// per-block path turns into one run, the same bits as the per-tensor path — after the trit words,
// row by row in the stacked order (w.BlockScales); the extra words are len(words) -
// w.BlockScales - Rows*Cols/16. The returned weights lack Buf: upload words there.
func StackTernary(name string, mats []*model.TernaryMatrix, outScales []float32, interleave bool) (words []uint32, w *TernaryWeights, err error) {
	if len(mats) == 0 || len(mats) > 3 || interleave && len(mats) != 2 {
		return nil, nil, fmt.Errorf("%s: %d matrices to stack (1 to 3; 2 interleaved)", name, len(mats))
	}
	w = &TernaryWeights{Name: name, Cols: uint32(mats[0].Cols), Interleaved: interleave}
	type packed struct {
		words  []uint32
		blocks []float32
		scale  float32
	}
	ps := make([]packed, len(mats))
	anyBlocks := false
	for i, m := range mats {
		if m.Cols != mats[0].Cols || interleave && m.Rows != mats[0].Rows {
			return nil, nil, fmt.Errorf("%s: tensor %s is %dx%d, %s %dx%d; stacked tensors need the same columns (and rows, interleaved)", name, m.Name, m.Rows, m.Cols, mats[0].Name, mats[0].Rows, mats[0].Cols)
		}
		wd, sc, bl, err := RepackTernaryBlocks(m)
		if err != nil {
			return nil, nil, err
		}
		ps[i] = packed{wd, bl, sc}
		anyBlocks = anyBlocks || bl != nil
		seg := TernarySegment{Name: m.Name, Rows: uint32(m.Rows), Scale: sc}
		if outScales != nil {
			seg.OutScale = outScales[i]
		}
		w.Segments = append(w.Segments, seg)
		w.Rows += uint32(m.Rows)
	}
	G := mats[0].Cols / 256
	if anyBlocks {
		for i, m := range mats {
			if ps[i].blocks == nil {
				if m.Cols%256 != 0 {
					return nil, nil, fmt.Errorf("%s: tensor %s has %d columns; per-block scales need a multiple of 256", name, m.Name, m.Cols)
				}
				ps[i].blocks = make([]float32, m.Rows*G)
				for j := range ps[i].blocks {
					ps[i].blocks[j] = ps[i].scale
				}
			}
		}
	}
	nw := mats[0].Cols / 16
	words = make([]uint32, 0, int(w.Rows)*nw+map[bool]int{false: 0, true: int(w.Rows) * G}[anyBlocks])
	var blocks []float32
	if interleave {
		for r := 0; r < mats[0].Rows; r++ {
			for i := range ps {
				words = append(words, ps[i].words[r*nw:(r+1)*nw]...)
				if anyBlocks {
					blocks = append(blocks, ps[i].blocks[r*G:(r+1)*G]...)
				}
			}
		}
	} else {
		for i := range ps {
			words = append(words, ps[i].words...)
			blocks = append(blocks, ps[i].blocks...)
		}
	}
	if anyBlocks {
		w.BlockScales = uint32(len(words))
		for _, sc := range blocks {
			words = append(words, gpu.F32(sc))
		}
	}
	return words, w, nil
}

// Bytes is the device memory the packed trits take (TernaryMatrixBytes: 2 bits a weight, or 52
// bytes per 256 weights in the base-3 layout), per-block scales not included.
func (w *TernaryWeights) Bytes() uint64 {
	p := w.Packing
	if p != PackingBase3 {
		p = Packing2Bit
	}
	return TernaryMatrixBytes(int(w.Rows), int(w.Cols), p)
}

// checkPacking validates w's layout for a dispatch: a known packing, and whole 256-column blocks
// for the base-3 layout.
func (w *TernaryWeights) checkPacking(op string) error {
	switch w.Packing {
	case "", Packing2Bit:
		return nil
	case PackingBase3:
		if base3Fits(int(w.Cols)) {
			return nil
		}
		return fmt.Errorf("%s %s: packing %q of a matrix with %d columns (base3 needs a multiple of 256)", op, w.Name, w.Packing, w.Cols)
	}
	return fmt.Errorf("%s %s: unknown packing %q (want %q or %q)", op, w.Name, w.Packing, Packing2Bit, PackingBase3)
}

// RepackTernary converts a ternary matrix from its file encoding (I2_S, TQ2_0 or TQ1_0) to the GPU
// layout of ternary_matmul.comp: row-major, Cols/16 uint32 words per row, bits [2s+8b, 2s+8b+1]
// of word w holding trit+1 of column 16w+4s+b. It returns the words and the per-tensor weight
// scale. It is RepackTernaryBlocks for a tensor with one scale: a TQ tensor whose blocks carry
// different scales, or Cols not a multiple of 16, is an error naming the tensor.
func RepackTernary(m *model.TernaryMatrix) ([]uint32, float32, error) {
	words, scale, blocks, err := RepackTernaryBlocks(m)
	if err != nil {
		return nil, 0, err
	}
	if blocks != nil {
		return nil, 0, fmt.Errorf("tensor %s: block scales differ; RepackTernary needs one scale per tensor (RepackTernaryBlocks takes any)", m.Name)
	}
	return words, scale, nil
}

// RepackTernaryBlocks is RepackTernary for any ternary tensor. When every block of the tensor has
// the same scale it returns that scale and nil blocks; otherwise (TQ1_0/TQ2_0 blocks with different
// scales, an all-zero block stored with scale 0 among them) blocks holds the Rows*Cols/256
// per-block scales, row by row, for the per-block path of ternary_matmul.comp
// (TernaryWeights.BlockScales). A non-finite scale is an error naming the tensor, row and block.
func RepackTernaryBlocks(m *model.TernaryMatrix) (words []uint32, scale float32, blocks []float32, err error) {
	if m.Cols%16 != 0 {
		return nil, 0, nil, fmt.Errorf("tensor %s: %d columns, the GPU layout needs a multiple of 16", m.Name, m.Cols)
	}
	nw := m.Cols / 16
	out := make([]uint32, m.Rows*nw)
	trits := make([]int8, m.Cols)
	scales := make([]float32, m.Groups())
	all := make([]float32, 0, m.Rows*len(scales))
	uniform := true
	for r := 0; r < m.Rows; r++ {
		if err := m.Row(r, trits, scales); err != nil {
			return nil, 0, nil, err
		}
		for g, sc := range scales {
			if f := float64(sc); math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, 0, nil, fmt.Errorf("tensor %s: the weight scale of row %d block %d is %v; weights must be finite", m.Name, r, g, sc)
			}
			if r == 0 && g == 0 {
				scale = sc
			} else if math.Float32bits(sc) != math.Float32bits(scale) {
				uniform = false
			}
		}
		all = append(all, scales...)
		row := out[r*nw : (r+1)*nw]
		for c, t := range trits {
			w, rem := c/16, c%16
			sh := uint(2*(rem/4) + 8*(rem%4))
			row[w] |= uint32(t+1) << sh
		}
	}
	if uniform {
		return out, scale, nil, nil
	}
	if m.GroupSize() != 256 || m.Cols%256 != 0 {
		return nil, 0, nil, fmt.Errorf("tensor %s: per-block scales on the GPU need 256-column blocks (group size %d, %d columns)", m.Name, m.GroupSize(), m.Cols)
	}
	return out, scale, all, nil
}

// MatMulArgs places the T tokens of a ternary matmul: activations of token t start at uvec4 AOff
// + t*Cols/16 of a (16 int8 each), its (1/scale, Σq) pair at slot SOff + t of sq, its outputs at
// float YOff + t*YStride of y. Accumulate adds to y (the fused residual connection). Norm, when
// not nil, fuses the RMSNorm and quantization of the input into the matmul (one token; a and sq
// are then unused and may be empty ranges).
type MatMulArgs struct {
	T             uint32
	AOff, SOff    uint32
	YOff, YStride uint32
	Accumulate    bool
	Norm          *NormInput
}

// NormFuseMaxCols is the widest input a one-token ternary matmul normalizes and quantizes itself
// (MatMulArgs.Norm): ternary_matmul.comp's NORM_MAX_K, the int8 activations it keeps in shared
// memory (8 KiB). The 2B4T shapes need 2560 (attn_norm, ffn_norm, attn_sub_norm) and 6912
// (ffn_sub_norm).
const NormFuseMaxCols = 8192

// NormInput is the fused prologue of a one-token ternary matmul (MatMulArgs.Norm; the
// ternary_gemv*_norm kernels, ternary_matmul.comp with NORMQ=1): every workgroup computes
// RMSNorm(X, W, Eps) of the token's f32 input X [Cols] with weight W [Cols] and its int8
// quantization with the code of rmsnorm_quant (shaders/norm_quant.glsl, the same order), so the
// outputs are bit for bit RMSNormQuant followed by the plain matmul, with one dispatch fewer.
type NormInput struct {
	X, W gpu.Range
	Eps  float32
}

// check validates a fused-norm matmul of w over m's tokens.
func (n *NormInput) check(op string, w *TernaryWeights, m MatMulArgs) error {
	if m.T != 1 || w.Cols > NormFuseMaxCols {
		return fmt.Errorf("%s %s: a fused input norm takes 1 token and at most %d columns, not %d tokens and %d", op, w.Name, NormFuseMaxCols, m.T, w.Cols)
	}
	return checkLen(op+" "+w.Name+" norm", w.Cols, n.X, n.W)
}

// fusedDecodeNorms reports whether the decode step on a device of type devType (gpu.Info.Type)
// fuses the layer norms into the GEMVs that consume them (MatMulArgs.Norm: attn_norm, ffn_norm and
// the sub-norms; the output norm into the q8_0 head): on a GPU, where a dependent dispatch costs
// 1–5 µs, yes; on a CPU device (lavapipe, SwiftShader), which executes every workgroup's copy of
// the norm as real work while a dispatch costs little, no — there the fused step measured half
// the decode speed of the separate rmsnorm_quant on the built-in model — unless force
// (GPUOptions.fuseNorms, the tests). env (BITGPU_FUSED_NORMS) overrides both: "1" fuses, "0"
// does not, "" leaves the choice above; anything else is an error naming the variable. The bits
// are the same either way.
//
// The price on a GPU is cache traffic: each workgroup of a fused GEMV reads the input and the
// norm weight (about 20·K bytes: x three times, the weight twice) — for the 2B4T shapes about
// 110 MB a layer (gate/up's 864 workgroups and down's 320 the most), 3.3 GB a token from cache
// against the 0.87 GB the step reads from memory — against 4 dispatches a layer saved. No GPU has
// been lent to measure which wins; the variable is there to measure it (bitgpu bench e2e).
func fusedDecodeNorms(devType string, force bool, env string) (bool, error) {
	switch env {
	case "":
		return force || devType != "cpu", nil
	case "0", "1":
		return env == "1", nil
	}
	return false, fmt.Errorf("BITGPU_FUSED_NORMS=%q: want 0 or 1", env)
}

// TernaryMatMul records y[t][r] (+)= ((float(Σ_j trit[r][j]*q[t][j]) * w.Scale) * Rcp32(s[t])) *
// w.OutScale for T tokens, cpuref's BitLinear bits exactly: the GEMV kernel for one token, the token-tiled GEMM
// kernel for more.
func (ks *Kernels) TernaryMatMul(s *gpu.Sequence, w *TernaryWeights, a, sq, y gpu.Range, m MatMulArgs) error {
	if len(w.Segments) > 1 {
		return fmt.Errorf("ternary matmul %s: %d stacked tensors (TernaryMatMulStacked)", w.Name, len(w.Segments))
	}
	return ks.ternaryDispatch(s, w, a, sq, m, []SegmentOut{{Y: y, YOff: m.YOff, YStride: m.YStride}}, 0)
}

// SegmentOut places the outputs of one tensor of a stacked matmul: token t's row r at float
// YOff + t*YStride + r of Y.
type SegmentOut struct {
	Y             gpu.Range
	YOff, YStride uint32
}

// TernaryMatMulStacked is TernaryMatMul for a stacked matrix (StackTernary, not interleaved) in
// one dispatch: each tensor's rows get exactly its own TernaryMatMul's arithmetic (its weight and
// output scales), written to its entry of outs (m.YOff and m.YStride are unused).
func (ks *Kernels) TernaryMatMulStacked(s *gpu.Sequence, w *TernaryWeights, a, sq gpu.Range, m MatMulArgs, outs []SegmentOut) error {
	if w.Interleaved || len(outs) != len(w.segments()) {
		return fmt.Errorf("ternary matmul %s: %d outputs for %d stacked tensors (interleaved %v)", w.Name, len(outs), len(w.segments()), w.Interleaved)
	}
	return ks.ternaryDispatch(s, w, a, sq, m, outs, 0)
}

// TernaryGLU records the gate and up projections of an interleaved stacked matrix (StackTernary
// with interleave: gate, then up) and the gated activation in one dispatch: y[t][i] =
// act(gate[t][i]) * up[t][i] at float m.YOff + t*m.YStride + i, with gate and up exactly
// TernaryMatMul's values and the product exactly GLU's (cpuref.ReLU2GLU / cpuref.SiLUGLU). One
// row group (subgroup) computes both rows of a pair (the kernels ternary_gemv_glu and
// ternary_gemm_glu: ternary_matmul.comp with its GLU constant set).
func (ks *Kernels) TernaryGLU(s *gpu.Sequence, w *TernaryWeights, a, sq, y gpu.Range, m MatMulArgs, act model.Activation) error {
	mode := uint32(1)
	switch act {
	case model.ActReLU2:
	case model.ActSiLU:
		mode = 2
	default:
		return fmt.Errorf("ternary glu %s: unknown activation %q", w.Name, act)
	}
	if !w.Interleaved || len(w.Segments) != 2 || m.Accumulate {
		return fmt.Errorf("ternary glu %s: needs interleaved gate/up rows (StackTernary) and no accumulation", w.Name)
	}
	out := SegmentOut{Y: y, YOff: m.YOff, YStride: m.YStride}
	return ks.ternaryDispatch(s, w, a, sq, m, []SegmentOut{out, out}, mode)
}

// ternaryDispatch records ternary_matmul.comp over w's segments (outs: one per segment) with
// the given fused-GLU mode (0 none, 1 ReLU², 2 SiLU).
func (ks *Kernels) ternaryDispatch(s *gpu.Sequence, w *TernaryWeights, a, sq gpu.Range, m MatMulArgs, outs []SegmentOut, glu uint32) error {
	if m.T == 0 {
		return fmt.Errorf("ternary matmul %s: no tokens", w.Name)
	}
	segs := w.segments()
	if len(segs) > 3 || len(outs) != len(segs) {
		return fmt.Errorf("ternary matmul %s: %d outputs for %d tensors (at most 3)", w.Name, len(outs), len(segs))
	}
	gemv, gemm := "ternary_gemv", "ternary_gemm"
	units := w.Rows // rows, or gate/up pairs for the fused GLU
	if glu != 0 {
		gemv, gemm = gemv+"_glu", gemm+"_glu"
		units /= 2
	}
	acc := uint32(0)
	if m.Accumulate {
		acc = 1
	}
	if m.Norm != nil {
		if err := m.Norm.check("ternary matmul", w, m); err != nil {
			return err
		}
		gemv += "_norm"
		a, sq = m.Norm.X, m.Norm.W
	}
	if err := w.checkPacking("ternary matmul"); err != nil {
		return err
	}
	k, name, tile, err := ks.matmulKernel(gemv, gemm, m.T)
	if err == nil {
		k, err = ks.packKernel(name, k, tile, w)
	}
	if err != nil {
		return err
	}
	groups := [3]uint32{(units + ks.rowsPerGroup(name) - 1) / ks.rowsPerGroup(name), (m.T + tile - 1) / tile, 1}
	// Unused segments: empty (starting at N), with segment 0's scales and output.
	for len(segs) < 3 {
		segs = append(segs, TernarySegment{Scale: segs[0].Scale, OutScale: segs[0].OutScale})
		outs = append(outs, outs[0])
	}
	var ws, os [3]uint32
	for i, sg := range segs {
		oscale := sg.OutScale
		if oscale == 0 {
			oscale = 1
		}
		ws[i], os[i] = gpu.F32(sg.Scale), gpu.F32(oscale)
	}
	seg1, seg2 := min(w.Rows, segs[0].Rows), min(w.Rows, segs[0].Rows+segs[1].Rows)
	push := []uint32{w.Cols, w.Rows, m.T, m.AOff, m.SOff, outs[0].YOff, outs[0].YStride, ws[0], acc, os[0], w.BlockScales,
		seg1, seg2, ws[1], ws[2], os[1], os[2], outs[1].YOff, outs[1].YStride, outs[2].YOff, outs[2].YStride, glu}
	if m.Norm != nil {
		push = append(push, gpu.F32(m.Norm.Eps))
	}
	return s.Dispatch(k, groups, push, w.Buf, a, sq, outs[0].Y, outs[1].Y, outs[2].Y)
}

// F16Matrix is an F16 matrix on the device (Rows rows of Cols halves, row-major), split into row
// chunks that each fit one storage-buffer binding.
type F16Matrix struct {
	Name       string
	Rows, Cols uint32
	Chunks     []F16Chunk
}

// F16Chunk is rows [Row0, Row0+Rows) of an F16Matrix.
type F16Chunk struct {
	Row0, Rows uint32
	Buf        gpu.Range
}

// F16Args places the T tokens of an F16 matvec: x of token t at float XOff + t*Cols, outputs at
// YOff + t*YStride. Accumulate adds to y (the fused residual connection).
type F16Args struct {
	T             uint32
	XOff          uint32
	YOff, YStride uint32
	Accumulate    bool
}

// F16MatMul records y[t][r] = x[t] · E[r] over every chunk of e, with cpuref.Logits' canonical
// 32-lane dot product (bit for bit).
func (ks *Kernels) F16MatMul(s *gpu.Sequence, e *F16Matrix, x, y gpu.Range, a F16Args) error {
	if a.T == 0 || e.Cols%2 != 0 {
		return fmt.Errorf("f16 matmul %s: %d tokens, %d columns (must be even)", e.Name, a.T, e.Cols)
	}
	k, name, tile, err := ks.matmulKernel("f16_gemv", "f16_gemm", a.T)
	if err != nil {
		return err
	}
	rpg := ks.rowsPerGroup(name)
	for _, c := range e.Chunks {
		acc := uint32(0)
		if a.Accumulate {
			acc = 1
		}
		push := []uint32{e.Cols, c.Rows, a.T, a.XOff, a.YOff, a.YStride, c.Row0, acc}
		if err := s.Dispatch(k, [3]uint32{(c.Rows + rpg - 1) / rpg, (a.T + tile - 1) / tile, 1}, push, c.Buf, x, y); err != nil {
			return err
		}
	}
	return nil
}

// RoPEArgs describes one rope_kv dispatch: T tokens at positions step[0] .. step[0]+T-1, H query
// and KVH key/value heads of HeadDim, the first RoPEDim dims of each head rotated in Mode, a
// cos/sin table and caches of Ctx rows. QOff and KVOff are the first floats of token 0 in q and
// in k/v.
type RoPEArgs struct {
	T, H, KVH, HeadDim, RoPEDim uint32
	Mode                        model.RoPEMode
	Ctx                         uint32
	QOff, KVOff                 uint32
	// Paged, when not nil, places token t at position Paged's meta[t] of its own sequence and
	// its K/V rows in a block pool (PagedRefs) instead of step[0]+t of contiguous caches.
	Paged *PagedRefs
}

// RoPEKV records RoPE on q (in place) and k, and stores k and v as f16 in the caches at positions
// step[0]+t (a.Paged nil), or of a paged cache at each token's own position and block (a.Paged). cs is the cos table then the sin table ([Ctx][RoPEDim/2] f32 each, RoPETable).
// One invocation per rotary pair of q and per f16 word of the caches (not per head), each with
// cpuref.RoPE's and cpuref.StoreKV's arithmetic.
func (ks *Kernels) RoPEKV(s *gpu.Sequence, q, k, v, cs, kCache, vCache gpu.Range, a RoPEArgs) error {
	if a.HeadDim%2 != 0 || a.RoPEDim%2 != 0 || a.RoPEDim > a.HeadDim || a.RoPEDim == 0 {
		return fmt.Errorf("rope_kv: head dim %d and rope dim %d must be even with rope dim in (0, head dim]", a.HeadDim, a.RoPEDim)
	}
	n := a.T * (a.H*a.RoPEDim/2 + a.KVH*a.HeadDim/2) // q's rotary pairs, then k/v's cache words
	push := []uint32{a.T, a.H, a.KVH, a.HeadDim, a.RoPEDim, uint32(a.Mode), a.Ctx, a.QOff, a.KVOff}
	meta := cs // unread without paging
	push, meta = a.Paged.push(push, meta)
	return ks.dispatch(s, "rope_kv", groups1D(n), push, q, k, v, cs, kCache, vCache, meta)
}

// TernaryQKVRoPE records a layer's q, k and v projections (a StackTernaryRoPE matrix) with RoPE
// and the KV store in the epilogue, in one dispatch: q rotated at float m.YOff + t*m.YStride of
// q, k rotated and v as f16 at position step[0]+t of kCache and vCache (paged nil) or at each
// token's own position and block of a paged cache (paged, RoPEArgs.Paged) — exactly TernaryMatMul
// followed by RoPEKV (cpuref's BitLinear, RoPE and StoreKV bits). cs is RoPETable's cos then sin
// table of ctx rows (its other fields come from w.RoPE and w's segments).
func (ks *Kernels) TernaryQKVRoPE(s *gpu.Sequence, w *TernaryWeights, a, sq, q, cs, kCache, vCache gpu.Range, m MatMulArgs, ctx uint32, paged *PagedRefs) error {
	if w.RoPE == nil || m.T == 0 || m.Accumulate {
		return fmt.Errorf("ternary qkv+rope %s: needs StackTernaryRoPE weights, tokens and no accumulation", w.Name)
	}
	gemv := "ternary_gemv_rope"
	if m.Norm != nil {
		if err := m.Norm.check("ternary qkv+rope", w, m); err != nil {
			return err
		}
		gemv += "_norm"
		a, sq = m.Norm.X, m.Norm.W
	}
	if err := w.checkPacking("ternary qkv+rope"); err != nil {
		return err
	}
	k, name, tile, err := ks.matmulKernel(gemv, "ternary_gemm_rope", m.T)
	if err == nil {
		k, err = ks.packKernel(name, k, tile, w)
	}
	if err != nil {
		return err
	}
	segs := w.segments()
	var ws, os [3]uint32
	for i, sg := range segs {
		oscale := sg.OutScale
		if oscale == 0 {
			oscale = 1
		}
		ws[i], os[i] = gpu.F32(sg.Scale), gpu.F32(oscale)
	}
	seg1, seg2 := segs[0].Rows, segs[0].Rows+segs[1].Rows
	units := w.Rows / 4
	groups := [3]uint32{(units + ks.rowsPerGroup(name) - 1) / ks.rowsPerGroup(name), (m.T + tile - 1) / tile, 1}
	l := w.RoPE
	push := []uint32{w.Cols, w.Rows, m.T, m.AOff, m.SOff, m.YOff, m.YStride, ws[0], 0, os[0], w.BlockScales,
		seg1, seg2, ws[1], ws[2], os[1], os[2], 0, 0, 0, 0, 0, l.HeadDim, l.RoPEDim, uint32(l.Mode), ctx}
	push, meta := paged.push(push, cs)
	if m.Norm != nil {
		push = append(push, gpu.F32(m.Norm.Eps))
	}
	return s.Dispatch(k, groups, push, w.Buf, a, sq, q, q, q, cs, kCache, vCache, meta)
}

// GLU records g[i] = act(g[i]) * u[i] for n values (ReLU² or SiLU per act).
func (ks *Kernels) GLU(s *gpu.Sequence, g, u gpu.Range, n uint32, act model.Activation) error {
	mode := uint32(0)
	switch act {
	case model.ActReLU2:
	case model.ActSiLU:
		mode = 1
	default:
		return fmt.Errorf("glu: unknown activation %q", act)
	}
	if err := checkLen("glu", n, g, u); err != nil {
		return err
	}
	return ks.dispatch(s, "glu", groups1D(n), []uint32{n, mode}, g, u)
}

// RoPETable returns the cos table then the sin table, each [ctx][ropeDim/2] f32, with
// theta = pos * base^(-2i/ropeDim) computed in float64 and cos/sin rounded to f32 — the values
// cpuref.RoPE uses, so the GPU rotation matches it exactly.
func RoPETable(ctx, ropeDim int, base float32) []float32 {
	half := ropeDim / 2
	out := make([]float32, 2*ctx*half)
	for pos := 0; pos < ctx; pos++ {
		for i := 0; i < half; i++ {
			theta := float64(pos) * math.Pow(float64(base), -2*float64(i)/float64(ropeDim))
			out[pos*half+i] = float32(math.Cos(theta))
			out[ctx*half+pos*half+i] = float32(math.Sin(theta))
		}
	}
	return out
}

// PackInt8 packs int8 values four per uint32, little-endian (the activation layout of
// rmsnorm_quant and ternary_matmul). len(q) must be a multiple of 4.
func PackInt8(q []int8) []uint32 {
	out := make([]uint32, len(q)/4)
	for i := range out {
		for b := 0; b < 4; b++ {
			out[i] |= uint32(uint8(q[4*i+b])) << (8 * b)
		}
	}
	return out
}
