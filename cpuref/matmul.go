package cpuref

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"

	"github.com/bitgpu/bitgpu/model"
)

// TernaryMatVec computes one token's BitLinear product from int8 activations q (length w.Cols,
// from QuantizeActivations with scale s) and the ternary matrix w (w.Rows outputs, w.Cols inputs,
// straight from its I2_S, TQ1_0 or TQ2_0 encoding) into dst (length w.Rows):
//
//	acc_ik = Σ_{j in run k} t_ij * q_j                  (exact int32)
//	dst_i  = (Σ_k float32(acc_ik) * w_ik) * Rcp32(s)     (f32, runs in order, first term not added to 0)
//
// where a run is a maximal stretch of consecutive groups of row i with the same weight scale w_ik
// (one per-tensor scale for I2_S, one f16 scale per 256-column block for TQ1_0/TQ2_0,
// model.TernaryMatrix.GroupSize). With one scale per tensor, as in BitNet checkpoints, this is
// dst_i = (float32(acc_i) * w) * Rcp32(s); ternary_matmul.comp computes both cases bit for bit
// (its per-block path follows the runs). Source: "The Era of 1-bit LLMs" eq. 1-5 and the README's Numerics section.
// It is TernaryMatMul with one token.
func TernaryMatVec(dst []float32, w *model.TernaryMatrix, q []int8, s float32) error {
	return TernaryMatMul(dst, w, q, []float32{s})
}

// TernaryMatMul is TernaryMatVec for n = len(s) tokens at once: q is [n][w.Cols] int8
// activations, s[t] token t's activation scale, and dst [n][w.Rows]. Output rows are split across
// GOMAXPROCS goroutines; each row is decoded once and computed by one goroutine in a fixed order,
// so the result does not depend on the number of goroutines and equals n TernaryMatVec calls bit
// for bit. It returns an error (naming the tensor) when a length does not match the matrix.
func TernaryMatMul(dst []float32, w *model.TernaryMatrix, q []int8, s []float32) error {
	if w == nil {
		return fmt.Errorf("cpuref: TernaryMatMul: nil matrix")
	}
	n := len(s)
	if n == 0 || len(q) != n*w.Cols || len(dst) != n*w.Rows {
		return fmt.Errorf("cpuref: TernaryMatMul: %s is [%d rows, %d cols]; for %d tokens want q %d and dst %d elements, got %d and %d",
			w.Name, w.Rows, w.Cols, n, n*w.Cols, n*w.Rows, len(q), len(dst))
	}
	if scale, ok := w.I2SScale(); ok && w.Cols%model.I2SBlockElems == 0 {
		return ternaryMatMulI2S(dst, w, scale, q, s)
	}
	gs, groups := w.GroupSize(), w.Groups()
	return parallelRows(w.Rows, func(lo, hi int) error {
		trits := make([]int8, w.Cols)
		scales := make([]float32, groups)
		for r := lo; r < hi; r++ {
			if err := w.Row(r, trits, scales); err != nil {
				return err
			}
			for t := range n {
				qt := q[t*w.Cols : (t+1)*w.Cols]
				var (
					y     float32
					begun bool
					acc   int32
				)
				for g := range groups {
					acc += dotTrits(trits[g*gs:(g+1)*gs], qt[g*gs:(g+1)*gs])
					if g+1 < groups && scales[g+1] == scales[g] {
						continue // the run goes on: keep adding in int32
					}
					term := float32(float32(acc) * scales[g])
					if begun {
						term = float32(y + term)
					}
					y, begun, acc = term, true, 0
				}
				dst[t*w.Rows+r] = float32(y * Rcp32(s[t]))
			}
		}
		return nil
	})
}

// ternaryMatMulI2S is TernaryMatMul for an I2_S matrix whose rows start on a 128-element block
// (Cols a multiple of 128), reading the packed bytes directly. Byte i of a row holds the codes of
// columns 128*(i/32) + i%32 + {0, 32, 64, 96}; for each token a table gives, for every (byte
// position, byte value), the exact int16 sum of those four trits times their int8 activations
// (|sum| <= 512), so a row's int32 accumulator is Cols/4 table reads instead of Cols
// multiply-adds and no row is unpacked (the lookup-table method of T-MAC and bitnet.cpp's TL
// kernels). The sums, and so every output bit, equal the generic path's.
func ternaryMatMulI2S(dst []float32, w *model.TernaryMatrix, scale float32, q []int8, s []float32) error {
	rowBytes := w.Cols / 4
	lut := make([]int16, rowBytes*256)
	for t := range s {
		buildI2SLUT(lut, q[t*w.Cols:(t+1)*w.Cols])
		out := dst[t*w.Rows : (t+1)*w.Rows]
		ds := Rcp32(s[t])
		err := parallelRows(w.Rows, func(lo, hi int) error {
			for r := lo; r < hi; r++ {
				row := w.Data[r*rowBytes : (r+1)*rowBytes]
				var acc int32
				for i, b := range row {
					acc += int32(lut[i<<8|int(b)])
				}
				out[r] = float32(float32(float32(acc)*scale) * ds)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// buildI2SLUT fills lut ([len(q)/4][256]) for one token's activations q (see ternaryMatMulI2S).
// Codes map to trits as in I2_S: 0 -> -1, 1 -> 0, 2 -> +1, and the unused 3 -> 0.
func buildI2SLUT(lut []int16, q []int8) {
	for i := 0; i < len(q)/4; i++ {
		base := (i/32)*model.I2SBlockElems + i%32
		var part [4][4]int16
		for k := 0; k < 4; k++ {
			x := int16(q[base+32*k])
			part[k] = [4]int16{-x, 0, x, 0}
		}
		out := lut[i*256 : i*256+256]
		for v := range out {
			out[v] = part[0][v>>6] + part[1][(v>>4)&3] + part[2][(v>>2)&3] + part[3][v&3]
		}
	}
}

// dotTrits returns Σ t[j]*q[j] exactly (|sum| <= 128*len, far inside int32 for any real width).
func dotTrits(t, q []int8) int32 {
	q = q[:len(t)]
	var acc int32
	for j, tv := range t {
		acc += int32(tv) * int32(q[j])
	}
	return acc
}

// LogitLanes is the number of partial sums of the canonical F16 GEMV dot product (32
// invocations per row in f16_matvec.comp).
const LogitLanes = 32

// Logits computes the output projection for one token: dst[v] = x · E[v] for every row v of e
// (GGUF shape [dim, vocab]; the tied token_embd table in F16 for BitNet b1.58 2B4T, or F32, BF16,
// Q8_0, dequantized exactly), with x the output-normed hidden state (length dim) and dst length
// vocab. The dot product is canonical (README, Numerics): the row is read in pairs (elements 2k,
// 2k+1); lane l of LogitLanes adds, for pairs k = l, l+LogitLanes, ... in order,
// (x[2k]*E[2k] + x[2k+1]*E[2k+1]) to its partial, every product and sum rounded to f32; the
// partials meet in TreeSum. shaders/f16_matvec.comp computes the same bits. Rows are split across
// GOMAXPROCS goroutines. It returns an error naming the tensor for a shape, length or type
// mismatch.
func Logits(dst, x []float32, e *model.Tensor) error {
	if e == nil {
		return fmt.Errorf("cpuref: Logits: nil tensor")
	}
	if len(e.Shape) != 2 || e.Shape[0] != uint64(len(x)) || e.Shape[1] != uint64(len(dst)) {
		return fmt.Errorf("cpuref: Logits: tensor %s has shape %v, want [%d, %d] for x of %d and dst of %d elements",
			e.Name, e.Shape, len(x), len(dst), len(x), len(dst))
	}
	dim := len(x)
	if e.Type == model.TypeF16 {
		if len(e.Data) < 2*dim*len(dst) {
			return fmt.Errorf("cpuref: Logits: tensor %s: shape %v needs %d bytes, found %d", e.Name, e.Shape, 2*dim*len(dst), len(e.Data))
		}
		return parallelRows(len(dst), func(lo, hi int) error {
			row := make([]float32, dim)
			for v := lo; v < hi; v++ {
				raw := e.Data[2*v*dim : 2*(v+1)*dim]
				for j := range row {
					row[j] = f16[binary.LittleEndian.Uint16(raw[2*j:])]
				}
				dst[v] = laneDot(x, row)
			}
			return nil
		})
	}
	return parallelRows(len(dst), func(lo, hi int) error {
		row := make([]float32, dim)
		for v := lo; v < hi; v++ {
			if err := model.FloatRow(e, v, row); err != nil {
				return err
			}
			dst[v] = laneDot(x, row)
		}
		return nil
	})
}

// FloatMatMul is a full-precision projection (F16, F32 or BF16 weights, GGUF shape [cols, rows]:
// upstream llama.cpp's `--outtype f16` BitNet files, the F16 baseline) for n tokens: dst[t][r] =
// x[t] · W[r] with Logits' canonical dot product (LogitLanes strided lanes of element pairs, then
// TreeSum), the float input unquantized — what the GPU's rmsnorm + f16_matvec path computes, bit
// for bit. x is [n][cols], dst [n][rows]. Errors name the tensor.
func FloatMatMul(dst []float32, w *model.Tensor, x []float32, n int) error {
	if w == nil || len(w.Shape) != 2 || n <= 0 {
		return fmt.Errorf("cpuref: FloatMatMul: want a 2-D matrix and tokens")
	}
	cols, rows := int(w.Shape[0]), int(w.Shape[1])
	if len(x) != n*cols || len(dst) != n*rows {
		return fmt.Errorf("cpuref: FloatMatMul: %s is [%d cols, %d rows]; for %d tokens want x %d and dst %d elements, got %d and %d",
			w.Name, cols, rows, n, n*cols, n*rows, len(x), len(dst))
	}
	for t := range n {
		if err := Logits(dst[t*rows:(t+1)*rows], x[t*cols:(t+1)*cols], w); err != nil {
			return err
		}
	}
	return nil
}

// LaneDot is Logits' canonical dot product of x and one row e (len(e) >= len(x); LogitLanes
// lanes of element pairs, then TreeSum; an odd last element forms a pair alone), for callers
// that hold the row as float32 already (the fast backend's LoRA factors).
func LaneDot(x, e []float32) float32 { return laneDot(x, e) }

// laneDot is the canonical pairwise, LogitLanes-lane dot product of Logits (len(e) >= len(x); an
// odd last element forms a pair alone).
func laneDot(x, e []float32) float32 {
	var partial [LogitLanes]float32
	for k := 0; 2*k < len(x); k++ {
		j := 2 * k
		pair := float32(x[j] * e[j])
		if j+1 < len(x) {
			pair = float32(pair + float32(x[j+1]*e[j+1]))
		}
		partial[k%LogitLanes] = float32(partial[k%LogitLanes] + pair)
	}
	return TreeSum(partial[:])
}

// parallelRows calls fn over contiguous ranges [lo, hi) covering 0..rows-1, one goroutine per
// range and at most GOMAXPROCS ranges, and returns the first error.
func parallelRows(rows int, fn func(lo, hi int) error) error {
	workers := min(runtime.GOMAXPROCS(0), rows)
	if workers <= 1 {
		return fn(0, rows)
	}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*rows/workers, (w+1)*rows/workers
		// Each worker reads memory-mapped weights: a fault there (the file shrank) becomes its error.
		wg.Go(func() { errs[w] = model.CatchFault(func() error { return fn(lo, hi) }) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
