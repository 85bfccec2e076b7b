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
	kernelDefs = append(kernelDefs,
		kernelDef{name: "q8_gemv", variants: q8, bindings: 5, outputs: []int{4}, push: 32, spec: []uint32{1}},
		kernelDef{name: "q8_gemm", variants: q8, bindings: 5, outputs: []int{4}, push: 32, spec: []uint32{GEMMTokens}},
	)
}

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
// outputs at float YOff + t*YStride of y.
type Q8Args struct {
	T             uint32
	AOff, SOff    uint32
	YOff, YStride uint32
}

// Q8MatMul records y[t][r] = cpuref.LogitsQ8 of token t's int8 activations and row r of e, over
// every chunk of e, bit for bit: the GEMV kernel for one token, the token-tiled GEMM kernel for
// more. Cols must be a multiple of 32.
func (ks *Kernels) Q8MatMul(s *gpu.Sequence, e *Q8Matrix, a, sq, y gpu.Range, m Q8Args) error {
	if m.T == 0 || e.Cols%model.Q8_0BlockElems != 0 {
		return fmt.Errorf("q8 matmul %s: %d tokens, %d columns (must be a multiple of %d)", e.Name, m.T, e.Cols, model.Q8_0BlockElems)
	}
	k, _, tile, err := ks.matmulKernel("q8_gemv", "q8_gemm", m.T)
	if err != nil {
		return err
	}
	const rpg = 256 / cpuref.LogitLanes // 32 invocations a row, workgroups of 256
	for _, c := range e.Chunks {
		push := []uint32{e.Cols, c.Rows, m.T, m.AOff, m.SOff, m.YOff, m.YStride, c.Row0}
		if err := s.Dispatch(k, [3]uint32{(c.Rows + rpg - 1) / rpg, (m.T + tile - 1) / tile, 1}, push, c.Weights, c.Scales, a, sq, y); err != nil {
			return err
		}
	}
	return nil
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
