//go:build cgo

package runtime

import (
	"encoding/binary"
	"fmt"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
)

func init() {
	q8 := []variant{
		{spv: "q8_matvec_dot", need: func(f gpu.Features) bool { return f.IntegerDotProduct && f.SubgroupShuffle }},
		{spv: "q8_matvec_subgroup", need: subgroupShuffle},
		{spv: "q8_matvec_shared"},
	}
	f16 := []variant{{spv: "f16_matvec_subgroup", need: subgroupShuffle}, {spv: "f16_matvec_shared"}}
	// q8_matvec.comp's constants: TOKENS, NORMQ (the fused output norm), ARGMAX (candidates
	// instead of logits); f16_matvec.comp's: TOKENS, ARGMAX; argmax.comp's: STAGE.
	kernelDefs = append(kernelDefs,
		kernelDef{name: "q8_gemv", variants: q8, bindings: 5, outputs: []int{4}, push: q8Push, spec: []uint32{1, 0, 0}},
		kernelDef{name: "q8_gemm", variants: q8, bindings: 5, outputs: []int{4}, push: q8Push, spec: []uint32{GEMMTokens, 0, 0}},
		kernelDef{name: "q8_gemv_norm", variants: q8, bindings: 5, outputs: []int{4}, push: q8Push, spec: []uint32{1, 1, 0}},
		kernelDef{name: "q8_gemv_argmax", variants: q8, bindings: 5, outputs: []int{4}, push: q8Push, spec: []uint32{1, 0, 1}},
		kernelDef{name: "q8_gemv_norm_argmax", variants: q8, bindings: 5, outputs: []int{4}, push: q8Push, spec: []uint32{1, 1, 1}},
		kernelDef{name: "f16_gemv_argmax", variants: f16, bindings: 3, outputs: []int{2}, push: 32, spec: []uint32{1, 1}},
		kernelDef{name: "argmax_partial", variants: []variant{{spv: "argmax"}}, bindings: 2, outputs: []int{1}, push: 12, spec: []uint32{1}},
		kernelDef{name: "argmax_reduce", variants: []variant{{spv: "argmax"}}, bindings: 2, outputs: []int{1}, push: 12, spec: []uint32{2}},
	)
}

// q8Push is the push-constant block of q8_matvec.comp in bytes: 8 words of placement and the
// fused norm's epsilon.
const q8Push = 36

// Q8Matrix is a Q8_0 matrix on the device (llama.cpp's block_q8_0 split in two arrays, the layout
// of shaders/q8_matvec.comp): Rows rows of Cols int8 weights and Cols/32 f16 block scales, in row
// chunks that each fit one storage-buffer binding.
type Q8Matrix struct {
	Name       string
	Rows, Cols uint32
	Chunks     []Q8Chunk
}

// Q8Chunk is rows [Row0, Row0+Rows) of a Q8Matrix: Weights holds Rows*Cols int8 values
// (row-major), Scales Rows*Cols/32 f16 bits (row-major, two per uint32 word, padded to a whole
// word).
type Q8Chunk struct {
	Row0, Rows      uint32
	Weights, Scales gpu.Range
}

// buffers lists the device buffers of the matrix (for Close).
func (m *Q8Matrix) buffers() []*gpu.Buffer {
	var bs []*gpu.Buffer
	for _, c := range m.Chunks {
		bs = append(bs, c.Weights.Buf, c.Scales.Buf)
	}
	return bs
}

// Q8HeadBytes is the device memory of a rows x cols Q8Matrix (cols a multiple of 32): rows*cols
// bytes of weights plus rows*cols/32 f16 scales, padded to a 4-byte word. The chunks of
// NewQ8Matrix hold an even number of rows, all but the last, so their padding adds up to the same.
func Q8HeadBytes(rows, cols int) uint64 {
	scales := uint64(rows) * uint64(cols/model.Q8_0BlockElems) * 2
	return uint64(rows)*uint64(cols) + (scales+3)/4*4
}

// RepackQ8_0 splits the Q8_0 bytes of rows rows of cols columns (block_q8_0: f16 d, 32 int8)
// into the int8 weights (rows*cols bytes, row-major) and the f16 scale bits (rows*cols/32, padded
// with a zero to an even count), the two arrays of a Q8Chunk. It returns an error when data is
// short or cols is not a multiple of 32.
func RepackQ8_0(data []byte, rows, cols int) (weights []byte, scales []uint16, err error) {
	if cols%model.Q8_0BlockElems != 0 {
		return nil, nil, fmt.Errorf("Q8_0: %d columns, want a multiple of %d", cols, model.Q8_0BlockElems)
	}
	blocks := rows * cols / model.Q8_0BlockElems
	if len(data) < blocks*model.Q8_0BlockBytes {
		return nil, nil, fmt.Errorf("Q8_0: %d rows of %d columns need %d bytes, got %d", rows, cols, blocks*model.Q8_0BlockBytes, len(data))
	}
	weights = make([]byte, rows*cols)
	scales = make([]uint16, (blocks+1)/2*2)
	for b := range blocks {
		blk := data[b*model.Q8_0BlockBytes : (b+1)*model.Q8_0BlockBytes]
		scales[b] = binary.LittleEndian.Uint16(blk)
		copy(weights[b*model.Q8_0BlockElems:], blk[2:])
	}
	return weights, scales, nil
}

// NewQ8Matrix uploads the model's output matrix t (GGUF shape [cols, rows]) to dev as a Q8Matrix:
// a Q8_0 t as it is, an F32, F16 or BF16 t re-quantized chunk by chunk with
// model.QuantizeQ8_0Matrix (the bytes cpuref.OutputMatrix gives the CPU backend). Chunks hold an
// even number of rows (all but the last) and at most min(maxStorageBufferRange, 1 GiB) bytes of
// weights. On an error it releases what it allocated; errors name the tensor.
func NewQ8Matrix(dev *gpu.Device, t *model.Tensor, rows, cols int) (*Q8Matrix, error) {
	if len(t.Shape) != 2 || t.Shape[0] != uint64(cols) || t.Shape[1] != uint64(rows) {
		return nil, fmt.Errorf("tensor %s: shape %v, want [%d, %d]", t.Name, t.Shape, cols, rows)
	}
	if cols%model.Q8_0BlockElems != 0 {
		return nil, fmt.Errorf("tensor %s: --lm-head q8_0 needs the width %d to be a multiple of %d", t.Name, cols, model.Q8_0BlockElems)
	}
	srcRow, err := model.EncodedSize(t.Type, cols)
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	if uint64(len(t.Data)) < uint64(srcRow)*uint64(rows) {
		return nil, fmt.Errorf("tensor %s: %d bytes, want %d", t.Name, len(t.Data), uint64(srcRow)*uint64(rows))
	}
	limit := min(dev.Info().MaxStorageBufferRange, 1<<30)
	per := max(2, limit/uint64(cols)/2*2)
	mat := &Q8Matrix{Name: t.Name, Rows: uint32(rows), Cols: uint32(cols)}
	done := false
	defer func() {
		if !done {
			for _, b := range mat.buffers() {
				if b != nil {
					b.Release()
				}
			}
		}
	}()
	for r0 := uint64(0); r0 < uint64(rows); r0 += per {
		n := min(per, uint64(rows)-r0)
		view := &model.Tensor{Name: t.Name, Type: t.Type, Shape: []uint64{uint64(cols), n}, Data: t.Data[r0*uint64(srcRow) : (r0+n)*uint64(srcRow)]}
		q, err := model.QuantizeQ8_0Matrix(view)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
		}
		w, s, err := RepackQ8_0(q.Data, int(n), cols)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
		}
		mat.Chunks = append(mat.Chunks, Q8Chunk{Row0: uint32(r0), Rows: uint32(n)})
		c := &mat.Chunks[len(mat.Chunks)-1]
		bw, err := gpu.NewBufferFrom(dev, w)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
		}
		c.Weights = bw.Whole()
		bs, err := gpu.NewBufferFrom(dev, s)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
		}
		c.Scales = bs.Whole()
	}
	done = true
	return mat, nil
}

// Q8Args places the T tokens of a Q8 matvec: token t's int8 activations start at uvec4 AOff +
// t*Cols/16 of a (rmsnorm_quant's output), its (Rcp32(s), Σq) pair at slot SOff + t of sq, its
// outputs at float YOff + t*YStride of y. Norm, when not nil, fuses the output norm into the
// GEMV (one token, at most NormFuseMaxCols columns): every workgroup computes RMSNorm(Norm.X,
// Norm.W, Norm.Eps) and its int8 quantization itself with rmsnorm_quant's code
// (shaders/norm_quant.glsl, as the ternary GEMVs' MatMulArgs.Norm), so the logits are bit for bit
// RMSNormQuant followed by the plain GEMV, with one dispatch and one dependent stage fewer; a and
// sq are then unused and may be empty ranges.
type Q8Args struct {
	T             uint32
	AOff, SOff    uint32
	YOff, YStride uint32
	Norm          *NormInput
}

// headRowsPerGroup is how many rows one workgroup of the LM head kernels (q8_matvec.comp,
// f16_matvec.comp) covers at a time: 32 invocations a row (cpuref.LogitLanes), workgroups of 256.
const headRowsPerGroup = 256 / cpuref.LogitLanes

// q8GEMVIters is how many rows each row group of a q8_matvec.comp GEMV workgroup takes in turn
// (its ITERS; the shader's header says why): a GEMV workgroup covers headRowsPerGroup *
// q8GEMVIters = 128 rows.
const q8GEMVIters = 16

// headGroups is the number of workgroups the LM head kernels run over a chunk of rows rows, with
// rows rows a workgroup (headRowsPerGroup, or that times q8GEMVIters for the q8 GEMV): the number
// of argmax candidates their fused-argmax kernels write.
func headGroups(rows, per uint32) uint32 { return (rows + per - 1) / per }

// ArgmaxCandidates is how many (key, row) pairs Q8MatMulArgmax writes for e: one per workgroup
// of every chunk, 128 rows each.
func (e *Q8Matrix) ArgmaxCandidates() uint32 {
	var n uint32
	for _, c := range e.Chunks {
		n += headGroups(c.Rows, headRowsPerGroup*q8GEMVIters)
	}
	return n
}

// q8Check validates a Q8 matvec of e over m.
func q8Check(op string, e *Q8Matrix, m Q8Args) error {
	if m.T == 0 || e.Cols%model.Q8_0BlockElems != 0 {
		return fmt.Errorf("%s %s: %d tokens, %d columns (must be a multiple of %d)", op, e.Name, m.T, e.Cols, model.Q8_0BlockElems)
	}
	if m.Norm != nil {
		if m.T != 1 || e.Cols > NormFuseMaxCols {
			return fmt.Errorf("%s %s: a fused output norm takes 1 token and at most %d columns, not %d tokens and %d", op, e.Name, NormFuseMaxCols, m.T, e.Cols)
		}
		return checkLen(op+" "+e.Name+" norm", e.Cols, m.Norm.X, m.Norm.W)
	}
	return nil
}

// q8Dispatch records kernel k over every chunk of e: tile tokens a workgroup row, y the logits
// (or the argmax candidates, yOff then the first pair of the first chunk's).
func (ks *Kernels) q8Dispatch(s *gpu.Sequence, k *gpu.Kernel, tile uint32, e *Q8Matrix, a, sq, y gpu.Range, m Q8Args, argmax bool) error {
	var eps float32
	if m.Norm != nil {
		a, sq, eps = m.Norm.X, m.Norm.W, m.Norm.Eps
	}
	yOff := m.YOff
	per := uint32(headRowsPerGroup) // rows a workgroup: the GEMM's 8, the GEMV's 128
	if tile == 1 {
		per *= q8GEMVIters
	}
	for _, c := range e.Chunks {
		push := []uint32{e.Cols, c.Rows, m.T, m.AOff, m.SOff, yOff, m.YStride, c.Row0, gpu.F32(eps)}
		if err := s.Dispatch(k, [3]uint32{headGroups(c.Rows, per), (m.T + tile - 1) / tile, 1}, push, c.Weights, c.Scales, a, sq, y); err != nil {
			return err
		}
		if argmax {
			yOff += headGroups(c.Rows, per)
		}
	}
	return nil
}

// Q8MatMul records y[t][r] = cpuref.LogitsQ8 of token t's int8 activations and row r of e, over
// every chunk of e, bit for bit: the GEMV kernel for one token (with m.Norm, the fused output
// norm's q8_gemv_norm), the token-tiled GEMM kernel for more. Cols must be a multiple of 32.
func (ks *Kernels) Q8MatMul(s *gpu.Sequence, e *Q8Matrix, a, sq, y gpu.Range, m Q8Args) error {
	if err := q8Check("q8 matmul", e, m); err != nil {
		return err
	}
	gemv := "q8_gemv"
	if m.Norm != nil {
		gemv = "q8_gemv_norm"
	}
	k, _, tile, err := ks.matmulKernel(gemv, "q8_gemm", m.T)
	if err != nil {
		return err
	}
	return ks.q8Dispatch(s, k, tile, e, a, sq, y, m, false)
}

// Q8MatMulArgmax records the first level of the greedy head of one token (m.T = 1): the logits
// Q8MatMul would write (m.Norm fused or not) are not stored; instead each workgroup writes the
// best of its rows — the largest logit, NaNs skipped, the lowest row on ties, as cpuref.Argmax —
// as a (key, row) pair (shaders/argmax.glsl; row 0xffffffff: none) to parts, e.ArgmaxCandidates()
// pairs from pair m.YOff (uint32 words 2*m.YOff ...). ArgmaxReduce picks the token from them.
func (ks *Kernels) Q8MatMulArgmax(s *gpu.Sequence, e *Q8Matrix, a, sq, parts gpu.Range, m Q8Args) error {
	if err := q8Check("q8 matmul argmax", e, m); err != nil {
		return err
	}
	if m.T != 1 {
		return fmt.Errorf("q8 matmul argmax %s: %d tokens, takes 1", e.Name, m.T)
	}
	if parts.Size < 8*uint64(m.YOff+e.ArgmaxCandidates()) {
		return fmt.Errorf("q8 matmul argmax %s: %d bytes for %d candidate pairs from pair %d", e.Name, parts.Size, e.ArgmaxCandidates(), m.YOff)
	}
	name := "q8_gemv_argmax"
	if m.Norm != nil {
		name = "q8_gemv_norm_argmax"
	}
	k, err := ks.kernel(name)
	if err != nil {
		return err
	}
	return ks.q8Dispatch(s, k, 1, e, a, sq, parts, m, true)
}

// ArgmaxCandidates is how many (key, row) pairs F16MatMulArgmax writes for e: one per workgroup
// of every chunk, 8 rows each.
func (e *F16Matrix) ArgmaxCandidates() uint32 {
	var n uint32
	for _, c := range e.Chunks {
		n += headGroups(c.Rows, headRowsPerGroup)
	}
	return n
}

// F16MatMulArgmax records the first level of the greedy F16 head of one token (a.T = 1, no
// Accumulate): the values F16MatMul would write are not stored; each workgroup writes the best of
// its rows as a (key, row) pair to parts, e.ArgmaxCandidates() pairs from pair a.YOff, as
// Q8MatMulArgmax does. ArgmaxReduce picks the token from them.
func (ks *Kernels) F16MatMulArgmax(s *gpu.Sequence, e *F16Matrix, x, parts gpu.Range, a F16Args) error {
	if a.T != 1 || a.Accumulate || e.Cols%2 != 0 {
		return fmt.Errorf("f16 matmul argmax %s: %d tokens (takes 1), accumulate %v, %d columns (must be even)", e.Name, a.T, a.Accumulate, e.Cols)
	}
	if parts.Size < 8*uint64(a.YOff+e.ArgmaxCandidates()) {
		return fmt.Errorf("f16 matmul argmax %s: %d bytes for %d candidate pairs from pair %d", e.Name, parts.Size, e.ArgmaxCandidates(), a.YOff)
	}
	yOff := a.YOff
	for _, c := range e.Chunks {
		push := []uint32{e.Cols, c.Rows, 1, a.XOff, yOff, 0, c.Row0, 0}
		if err := ks.dispatch(s, "f16_gemv_argmax", [3]uint32{headGroups(c.Rows, headRowsPerGroup), 1, 1}, push, c.Buf, x, parts); err != nil {
			return err
		}
		yOff += headGroups(c.Rows, headRowsPerGroup)
	}
	return nil
}

// ArgmaxReduce records out[outOff] = the row of the best of the n (key, row) candidate pairs at
// pair partOff of parts (Q8MatMulArgmax's, F16MatMulArgmax's or ArgmaxParallel's first level),
// in argmax.glsl's order: cpuref.Argmax's index over the elements they cover, 0xffffffff when
// every element was NaN. One workgroup of 256 invocations, each scanning n/256 pairs, then a tree.
func (ks *Kernels) ArgmaxReduce(s *gpu.Sequence, parts, out gpu.Range, n, partOff, outOff uint32) error {
	if n == 0 || parts.Size < 8*(uint64(partOff)+uint64(n)) || out.Size < 4*(uint64(outOff)+1) {
		return fmt.Errorf("argmax reduce: %d pairs from pair %d in %d bytes, index at %d in %d bytes", n, partOff, parts.Size, outOff, out.Size)
	}
	return ks.dispatch(s, "argmax_reduce", [3]uint32{1, 1, 1}, []uint32{n, 2 * partOff, outOff}, parts, out)
}

// argmaxElemsPerGroup is how many elements one workgroup of ArgmaxParallel's first level takes:
// 8 per invocation.
const argmaxElemsPerGroup = 256 * 8

// ArgmaxParallelCandidates is how many candidate pairs ArgmaxParallel writes to its parts buffer
// for n elements (n >= 1): one per first-level workgroup, at most 1024.
func ArgmaxParallelCandidates(n uint32) uint32 {
	return min(max(1, (n+argmaxElemsPerGroup-1)/argmaxElemsPerGroup), 1024)
}

// ArgmaxParallel records out[outOff] = the index of the largest of x[xOff .. xOff+n) — cpuref.
// Argmax's answer (the lowest index on ties, -0 equal to +0, NaNs skipped; 0xffffffff when n
// elements are all NaN) — in two dispatches: ArgmaxParallelCandidates(n) workgroups each reduce
// a grid-strided share of x to a candidate pair in parts (8 bytes each), then ArgmaxReduce.
func (ks *Kernels) ArgmaxParallel(s *gpu.Sequence, x, parts, out gpu.Range, n, xOff, outOff uint32) error {
	g := ArgmaxParallelCandidates(n)
	if n == 0 || x.Size < 4*(uint64(xOff)+uint64(n)) || parts.Size < 8*uint64(g) {
		return fmt.Errorf("argmax: %d elements from %d in %d bytes, %d candidate pairs in %d bytes", n, xOff, x.Size, g, parts.Size)
	}
	if err := ks.dispatch(s, "argmax_partial", [3]uint32{g, 1, 1}, []uint32{n, xOff, 0}, x, parts); err != nil {
		return err
	}
	return ks.ArgmaxReduce(s, parts, out, g, 0, outOff)
}

// outputTensor is the model's logits matrix: output.weight when the model has an untied one,
// else token_embd.weight (nil when missing).
func outputTensor(m *model.Model) *model.Tensor {
	if o, ok := m.Tensors["output.weight"]; ok && o != nil && !m.Config.TiedEmbedding {
		return o
	}
	return m.Tensors["token_embd.weight"]
}

// effectiveHead resolves the LM head NewGPU runs for m with the option h, as cpuref.OutputMatrix
// does for the CPU: q8_0 when h (or, for "", cpuref.DefaultLMHead) is q8_0 or the file's output
// matrix is already Q8_0, else f16. An unknown h is an error.
func effectiveHead(m *model.Model, h cpuref.LMHead) (cpuref.LMHead, error) {
	if h == "" {
		h = cpuref.DefaultLMHead
	}
	if h != cpuref.LMHeadF16 && h != cpuref.LMHeadQ8_0 {
		return "", fmt.Errorf("unknown LM head %q (want f16 or q8_0)", h)
	}
	if t := outputTensor(m); t != nil && t.Type == model.TypeQ8_0 {
		return cpuref.LMHeadQ8_0, nil
	}
	return h, nil
}

// LMHead reports the LM head the backend runs (f16 or q8_0; see GPUOptions.LMHead).
func (g *GPU) LMHead() cpuref.LMHead { return g.head }

// recordGreedy records the greedy decode step (DecodeGreedy) into greedySeq: the one-token
// forward pass whose LM head leaves argmax candidates in greedyLogits instead of logits, then
// argmax_reduce writing the token id to tokenOut (recordForwardOn with greedyRec set). It
// allocates those buffers when missing, and a timer when profiling is on; on an error no step is
// recorded.
func (g *GPU) recordGreedy() error {
	n := uint32(0)
	if g.outQ8 != nil {
		n = g.outQ8.ArgmaxCandidates()
	} else {
		n = g.out.ArgmaxCandidates()
	}
	var err error
	if g.greedyLogits == nil {
		if g.greedyLogits, err = g.dev.NewBuffer(8 * uint64(n)); err != nil {
			return err
		}
	}
	if g.tokenOut == nil {
		if g.tokenOut, err = g.dev.NewHostBuffer(4); err != nil {
			return err
		}
	}
	s, err := g.dev.NewSequence()
	if err != nil {
		return err
	}
	if g.profSeq != nil && g.greedyTimer == nil { // profiling: time this step too, argmax included
		g.greedyTimer, err = g.dev.NewTimer(profileMarks(len(g.layers)) + 1)
	}
	if err == nil {
		g.greedyRec = true
		err = g.recordForward(s, 1, g.greedyTimer, g.logits)
		g.greedyRec = false
	}
	if err != nil {
		s.Release()
		return err
	}
	g.greedySeq = s
	return nil
}

// GreedyStructure counts what one greedy decode step (DecodeGreedy) submits, as DecodeStructure
// does for the step that returns logits: its dispatches, pipeline barriers and queue submissions.
// The greedy step ends with the LM head writing argmax candidates and argmax_reduce (one
// dispatch and one dependent stage more than the logits step, whose argmax is the host's). All 0
// until the first DecodeGreedy records and submits the step, and after DropOwnCache.
func (g *GPU) GreedyStructure() (dispatches, barriers, submits int) {
	if g.greedySeq == nil || g.greedySteps == 0 {
		return 0, 0, 0
	}
	submits = 1 // the token id, as for Decode (DecodeStructure), plus a host-gathered row's upload
	if g.embd == nil && !g.x.HostVisible() {
		submits++
	}
	return g.greedySeq.Dispatches(), g.greedySeq.Barriers(), submits
}
