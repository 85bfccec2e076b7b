package model

import (
	"fmt"
	"runtime"
	"sync"
)

// QuantizeQ8_0Matrix returns the 2-D float matrix t (GGUF shape [cols, rows]; F32, F16, BF16, or
// Q4_K / Q6_K, dequantized by FloatRow)
// re-encoded as Q8_0 with the same name and shape: each row decoded exactly to f32 (FloatRow) and
// quantized by EncodeQ8_0, which follows ggml's quantize_row_q8_0_ref (ggml/src/ggml-quants.c):
// per 32-element block amax = max|x|, d = amax/127 in f32, id = 1/d (0 when d is 0),
// q = roundf(x*id) (half away from zero), d stored as f16 (round to nearest even). The result
// (cols/32*34 bytes a row) is in memory, not memory-mapped. A Q8_0 tensor is returned as it is.
// Rows are encoded in parallel (GOMAXPROCS goroutines); the bytes do not depend on the split. It
// returns an error naming the tensor when cols is not a multiple of 32, the shape is not 2-D, the
// type is not a float type, or the data is short.
func QuantizeQ8_0Matrix(t *Tensor) (*Tensor, error) {
	if t == nil {
		return nil, fmt.Errorf("model: QuantizeQ8_0Matrix: nil tensor")
	}
	if len(t.Shape) != 2 {
		return nil, fmt.Errorf("model: tensor %s: Q8_0 needs a 2-D matrix, found shape %v", t.Name, t.Shape)
	}
	if t.Type == TypeQ8_0 {
		return t, nil
	}
	if t.Type != TypeF32 && t.Type != TypeF16 && t.Type != TypeBF16 && t.Type != TypeQ4_K && t.Type != TypeQ6_K {
		return nil, fmt.Errorf("model: tensor %s: type %s cannot be re-quantized to Q8_0 (want F32, F16, BF16, Q4_K or Q6_K)", t.Name, t.Type)
	}
	cols, rows, err := matrixDims(t)
	if err != nil {
		return nil, err
	}
	if cols%Q8_0BlockElems != 0 {
		return nil, fmt.Errorf("model: tensor %s: %d columns; Q8_0 needs a multiple of %d", t.Name, cols, Q8_0BlockElems)
	}
	rowBytes := cols / Q8_0BlockElems * Q8_0BlockBytes
	out := make([]byte, rows*rowBytes)
	workers := max(1, min(runtime.GOMAXPROCS(0), rows))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*rows/workers, (w+1)*rows/workers
		wg.Go(func() {
			errs[w] = CatchFault(func() error {
				row := make([]float32, cols)
				for r := lo; r < hi; r++ {
					if err := FloatRow(t, r, row); err != nil {
						return err
					}
					encodeQ8_0Into(out[r*rowBytes:(r+1)*rowBytes], row)
				}
				return nil
			})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return &Tensor{Name: t.Name, Type: TypeQ8_0, Shape: []uint64{uint64(cols), uint64(rows)}, Data: out}, nil
}
