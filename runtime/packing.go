package runtime

import (
	"fmt"

	"github.com/bitgpu/bitgpu/model"
)

// TernaryPacking is the device layout of the GPU backend's ternary projections
// (GPUOptions.Packing, `--ternary-packing`). Every layout gives the same bits: a row's int32
// sums (whole row, or per 256-column block) do not depend on how its trits are stored, and the
// float epilogue is the same.
type TernaryPacking string

const (
	// PackingAuto lets the device choose (the tuning table of packing_gpu.go: base-3 on discrete
	// and integrated GPUs, 2-bit elsewhere).
	PackingAuto TernaryPacking = "auto"
	// Packing2Bit is bitgpu's 2-bit layout (RepackTernary): 4 weights a byte, 64 bytes per 256.
	Packing2Bit TernaryPacking = "2bit"
	// PackingBase3 is the base-3 layout (PackTernaryBase3): 5 trits a byte as in ggml's TQ1_0,
	// 52 bytes per 256 weights (Base3BlockBytes), 18.75 % fewer than 2-bit. It applies to
	// matrices whose columns are a multiple of 256; the others stay 2-bit.
	PackingBase3 TernaryPacking = "base3"
)

// Base3BlockBytes is the device size of 256 weights in the base-3 layout: three 16-byte groups
// of 80 weights (5 a byte) and one 32-bit word of 16 weights in the 2-bit layout — TQ1_0's 54-byte
// block (ggml-quants.c) less its f16 scale.
const Base3BlockBytes = 52

// ParseTernaryPacking parses `--ternary-packing`: "auto" (or ""), "2bit" or "base3". Other
// values are an error naming the flag.
func ParseTernaryPacking(s string) (TernaryPacking, error) {
	switch TernaryPacking(s) {
	case "", PackingAuto:
		return PackingAuto, nil
	case Packing2Bit, PackingBase3:
		return TernaryPacking(s), nil
	}
	return "", fmt.Errorf("--ternary-packing %q: want auto, 2bit or base3", s)
}

// base3Fits reports whether a matrix of cols columns can take the base-3 layout (whole
// 256-column blocks).
func base3Fits(cols int) bool { return cols > 0 && cols%256 == 0 }

// TernaryMatrixBytes is the device size in bytes of the trits of a rows x cols ternary matrix
// in packing p (PackingBase3: Base3BlockBytes per 256 weights when cols is a multiple of 256;
// otherwise, and for Packing2Bit, 2 bits a weight). Per-block scales are not included.
// PackingAuto is not a layout: resolve it first.
func TernaryMatrixBytes(rows, cols int, p TernaryPacking) uint64 {
	if p == PackingBase3 && base3Fits(cols) {
		return uint64(rows) * uint64(cols/256) * Base3BlockBytes
	}
	return uint64(rows) * uint64(cols) / 4
}

// ProjectionBytes is the device size in bytes of all of c's ternary projections (q, k, v, o,
// gate, up, down of every layer) in packing p (TernaryMatrixBytes each); with Packing2Bit it is
// the ternary projection count of DecodeBytesOf.
func ProjectionBytes(c model.Config, p TernaryPacking) uint64 {
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	per := TernaryMatrixBytes(qDim, c.Dim, p) + 2*TernaryMatrixBytes(kvDim, c.Dim, p) +
		TernaryMatrixBytes(c.Dim, qDim, p) + 2*TernaryMatrixBytes(c.FFNDim, c.Dim, p) +
		TernaryMatrixBytes(c.Dim, c.FFNDim, p)
	return uint64(c.Layers) * per
}

// packingSavings is how many fewer device bytes c's ternary projections take in p than in the
// 2-bit layout PlanMemoryHead and DecodeBytesOf count (0 for F16 projections).
func packingSavings(c model.Config, f16 bool, p TernaryPacking) uint64 {
	if f16 || p != PackingBase3 {
		return 0
	}
	return ProjectionBytes(c, Packing2Bit) - ProjectionBytes(c, PackingBase3)
}
