package cpuref

import (
	"encoding/binary"
	"fmt"

	"github.com/bitgpu/bitgpu/model"
)

// LMHead says how the logits `output_norm(x_L) · Eᵀ` are computed (the `--lm-head` flag).
type LMHead string

const (
	// LMHeadF16 keeps the file's float output matrix (F16, F32 or BF16, dequantized exactly) and
	// takes f32 dot products with the output-normed hidden state (Logits; on the GPU, F16 only).
	LMHeadF16 LMHead = "f16"
	// LMHeadQ8_0 re-quantizes the output matrix to Q8_0 at load (model.QuantizeQ8_0Matrix) and
	// runs an int8 GEMV on the output norm quantized like a BitLinear input (LogitsQ8).
	LMHeadQ8_0 LMHead = "q8_0"
	// DefaultLMHead is the head a zero LMHead ("") means: what `--lm-head` defaults to. q8_0 reads
	// 1.0625 bytes a logit weight instead of 2 (the F16 head is 56 % of the bytes a 2B4T token
	// reads) and costs nothing measurable in perplexity on the built-in model (README, "LM head").
	DefaultLMHead = LMHeadQ8_0
)

// ParseLMHead returns the LMHead the `--lm-head` value s names ("f16" or "q8_0"; "" is
// DefaultLMHead), or an error naming the flag.
func ParseLMHead(s string) (LMHead, error) {
	switch h := LMHead(s); h {
	case "":
		return DefaultLMHead, nil
	case LMHeadF16, LMHeadQ8_0:
		return h, nil
	}
	return "", fmt.Errorf("--lm-head %q: want f16 or q8_0", s)
}

// OutputMatrix returns the matrix the logits of head h read, given the model's output matrix e
// (output.weight, or token_embd when tied; GGUF shape [dim, vocab]): for LMHeadQ8_0 (or "" while
// DefaultLMHead is q8_0) e re-quantized to Q8_0 by model.QuantizeQ8_0Matrix, for LMHeadF16 e
// itself. A Q8_0 e (a llama-quantize output) is already quantized and is returned as it is for
// either head: its logits are always LogitsQ8's. So the head in effect is q8_0 exactly when the
// result's type is model.TypeQ8_0. Errors name the tensor (q8_0 needs dim a multiple of 32) or the
// unknown head.
func OutputMatrix(e *model.Tensor, h LMHead) (*model.Tensor, error) {
	if h == "" {
		h = DefaultLMHead
	}
	switch {
	case e == nil:
		return nil, fmt.Errorf("cpuref: OutputMatrix: nil tensor")
	case h == LMHeadF16 && (e.Type == model.TypeQ4_K || e.Type == model.TypeQ6_K):
		// The GPU's f16 head reads f16: a K-quant matrix is converted to F16 at load on both.
		return model.F16Matrix(e)
	case e.Type == model.TypeQ8_0 || h == LMHeadF16:
		return e, nil
	case h != LMHeadQ8_0:
		return nil, fmt.Errorf("cpuref: unknown LM head %q (want f16 or q8_0)", h)
	}
	q, err := model.QuantizeQ8_0Matrix(e)
	if err != nil {
		return nil, fmt.Errorf("cpuref: --lm-head q8_0: %w", err)
	}
	return q, nil
}

// LogitsQ8 computes the quantized LM head for one token: dst[v] = logit v from the int8
// activations q (length dim: output_norm(x_L) quantized by QuantizeActivations, which returned s)
// and row v of the Q8_0 matrix e (GGUF shape [dim, vocab], llama.cpp's block_q8_0: per 32 columns
// an f16 scale d_vb then 32 int8 weights w_vj). The arithmetic is canonical (README, Bit-exact
// contract), shaders/q8_matvec.comp computes the same bits:
//
//	acc_vb     = Σ_{j in block b} w_vj * q_j                        (exact int32, |acc| < 2^20)
//	term_vb    = float32(acc_vb) * d_vb                              (one f32 rounding)
//	partial[l] = Σ_{b ≡ l mod LogitLanes, b ascending} term_vb       (f32, from 0, in order)
//	dst[v]     = TreeSum(partial[0..LogitLanes-1]) * Rcp32(s)        (the F16 head's tree, then one product)
//
// This is dst[v] ≈ Σ_j (d_vb w_vj)(q_j / s) = dequant(E_v) · dequant(q), the logits of the
// BitLinear arithmetic applied to the output projection (BitNet b1.58's W8A8 LM head, as
// microsoft/BitNet's i2_s models run it with llama.cpp's q8_0 vec_dot). Rows are split across
// GOMAXPROCS goroutines. It returns an error naming the tensor for a type, shape or length mismatch.
func LogitsQ8(dst []float32, q []int8, s float32, e *model.Tensor) error {
	if e == nil {
		return fmt.Errorf("cpuref: LogitsQ8: nil tensor")
	}
	dim := len(q)
	if e.Type != model.TypeQ8_0 || len(e.Shape) != 2 || e.Shape[0] != uint64(dim) || e.Shape[1] != uint64(len(dst)) || dim%model.Q8_0BlockElems != 0 {
		return fmt.Errorf("cpuref: LogitsQ8: tensor %s is type %s shape %v, want Q8_0 [%d, %d] (a multiple of %d columns) for q of %d and dst of %d elements",
			e.Name, e.Type, e.Shape, dim, len(dst), model.Q8_0BlockElems, dim, len(dst))
	}
	blocks := dim / model.Q8_0BlockElems
	rowBytes := blocks * model.Q8_0BlockBytes
	if len(e.Data) < rowBytes*len(dst) {
		return fmt.Errorf("cpuref: LogitsQ8: tensor %s: shape %v needs %d bytes, found %d", e.Name, e.Shape, rowBytes*len(dst), len(e.Data))
	}
	inv := Rcp32(s)
	return parallelRows(len(dst), func(lo, hi int) error {
		for v := lo; v < hi; v++ {
			row := e.Data[v*rowBytes : (v+1)*rowBytes]
			var partial [LogitLanes]float32
			for b := range blocks {
				blk := row[b*model.Q8_0BlockBytes : (b+1)*model.Q8_0BlockBytes]
				d := f16[binary.LittleEndian.Uint16(blk)]
				w := (*[model.Q8_0BlockElems]byte)(blk[2:]) // fixed-size views: no bounds checks
				qb := (*[model.Q8_0BlockElems]int8)(q[b*model.Q8_0BlockElems:])
				var acc int32
				for j := range model.Q8_0BlockElems {
					acc += int32(int8(w[j])) * int32(qb[j])
				}
				l := b % LogitLanes
				partial[l] = float32(partial[l] + float32(float32(acc)*d))
			}
			dst[v] = float32(TreeSum(partial[:]) * inv)
		}
		return nil
	})
}

// Option configures New (WithLMHead).
type Option func(*options)

type options struct {
	head LMHead
	lora []Adapter
}

// WithLoRA makes New apply the adapters, in order, to the projections they target
// (AttachLoRA, ApplyLoRA), each at its Scale until SetLoRAScales changes them.
func WithLoRA(adapters ...Adapter) Option {
	return func(o *options) { o.lora = append(o.lora, adapters...) }
}

// WithLMHead makes New compute the logits with head h (LMHeadF16 or LMHeadQ8_0; "" is
// DefaultLMHead). See OutputMatrix for a file whose output matrix is already Q8_0.
func WithLMHead(h LMHead) Option { return func(o *options) { o.head = h } }

// LMHead reports the LM head in effect: LMHeadQ8_0 when the logits run LogitsQ8 (the option, or
// a Q8_0 output matrix in the file), else LMHeadF16.
func (b *Backend) LMHead() LMHead {
	if b.out.Type == model.TypeQ8_0 {
		return LMHeadQ8_0
	}
	return LMHeadF16
}
