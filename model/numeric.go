package model

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// Q8_0 block geometry (ggml `block_q8_0`): 32 elements share one f16 scale `d`; a block is the
// 2-byte little-endian f16 `d` followed by 32 int8 values, element i = d * qs[i].
const (
	Q8_0BlockElems = 32
	Q8_0BlockBytes = 34
)

// F16ToF32 converts the bits of an IEEE 754 binary16 value to float32. The conversion is exact
// (every f16 value, subnormals, infinities and NaNs included, is representable in f32).
func F16ToF32(h uint16) float32 { return float16.Frombits(h).Float32() }

// F32ToF16 converts f to the bits of the nearest IEEE 754 binary16 value, ties to even; values
// beyond the f16 range become ±Inf and NaN stays NaN.
func F32ToF16(f float32) uint16 { return float16.Fromfloat32(f).Bits() }

// RoundF16 rounds f to the nearest binary16 value (ties to even) and returns it as float32; it is
// F16ToF32(F32ToF16(f)), the rounding a value sees when stored in an f16 buffer (e.g. the KV cache).
func RoundF16(f float32) float32 { return F16ToF32(F32ToF16(f)) }

// BF16ToF32 converts the bits of a bfloat16 value (the upper 16 bits of an f32) to float32 (exact).
func BF16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F32ToBF16 converts f to the bits of the nearest bfloat16 value, ties to even (as PyTorch does);
// NaN stays a quiet NaN with its sign.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if f != f { // NaN: keep the sign, force a quiet NaN so truncation cannot make it Inf.
		return uint16(u>>16) | 0x0040
	}
	// Round to nearest even on the 16 bits that are dropped.
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// EncodedSize returns the number of bytes n elements of type typ take on disk: 4n for F32, 2n for
// F16 and BF16, 34 per 32-element block for Q8_0, n/4 + 32 for I2_S, 54 per 256-element block for
// TQ1_0 and 66 for TQ2_0. It returns an error for an unknown type, a negative n, or an n that is not
// a multiple of the type's block length.
func EncodedSize(typ TensorType, n int) (int, error) {
	if n < 0 {
		return 0, fmt.Errorf("model: negative element count %d", n)
	}
	block, bytes := 0, 0
	switch typ {
	case TypeF32:
		return 4 * n, nil
	case TypeF16, TypeBF16:
		return 2 * n, nil
	case TypeQ8_0:
		block, bytes = Q8_0BlockElems, Q8_0BlockBytes
	case TypeI2_S:
		if n%I2SBlockElems != 0 {
			return 0, fmt.Errorf("model: I2_S needs a multiple of %d elements, got %d", I2SBlockElems, n)
		}
		return n/4 + I2SScaleBytes, nil
	case TypeTQ1_0:
		block, bytes = TQBlockElems, TQ1_0BlockBytes
	case TypeTQ2_0:
		block, bytes = TQBlockElems, TQ2_0BlockBytes
	case TypeQ4_K:
		block, bytes = KBlockElems, Q4_KBlockBytes
	case TypeQ6_K:
		block, bytes = KBlockElems, Q6_KBlockBytes
	default:
		return 0, fmt.Errorf("model: no encoded size for tensor type %d", uint32(typ))
	}
	if n%block != 0 {
		return 0, fmt.Errorf("model: tensor type %d needs a multiple of %d elements, got %d", uint32(typ), block, n)
	}
	return n / block * bytes, nil
}

// DecodeF32Row decodes len(dst) little-endian f32 values from data into dst. It returns an error
// when data holds fewer than 4*len(dst) bytes.
func DecodeF32Row(data []byte, dst []float32) error {
	if len(data) < 4*len(dst) {
		return fmt.Errorf("model: F32 row of %d elements needs %d bytes, got %d", len(dst), 4*len(dst), len(data))
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return nil
}

// DecodeF16Row decodes len(dst) little-endian f16 values from data into dst. It returns an error
// when data holds fewer than 2*len(dst) bytes.
func DecodeF16Row(data []byte, dst []float32) error {
	if len(data) < 2*len(dst) {
		return fmt.Errorf("model: F16 row of %d elements needs %d bytes, got %d", len(dst), 2*len(dst), len(data))
	}
	for i := range dst {
		dst[i] = F16ToF32(binary.LittleEndian.Uint16(data[2*i:]))
	}
	return nil
}

// DecodeBF16Row decodes len(dst) little-endian bf16 values from data into dst. It returns an
// error when data holds fewer than 2*len(dst) bytes.
func DecodeBF16Row(data []byte, dst []float32) error {
	if len(data) < 2*len(dst) {
		return fmt.Errorf("model: BF16 row of %d elements needs %d bytes, got %d", len(dst), 2*len(dst), len(data))
	}
	for i := range dst {
		dst[i] = BF16ToF32(binary.LittleEndian.Uint16(data[2*i:]))
	}
	return nil
}

// blockCount checks a row of n elements of a block format (blockElems elements in blockBytes
// bytes) against dataLen bytes of data and returns its number of blocks; the error names the
// format and the sizes.
func blockCount(format string, n, blockElems, blockBytes, dataLen int) (int, error) {
	if n%blockElems != 0 {
		return 0, fmt.Errorf("model: %s row length %d is not a multiple of %d", format, n, blockElems)
	}
	nb := n / blockElems
	if dataLen < nb*blockBytes {
		return 0, fmt.Errorf("model: %s row of %d elements needs %d bytes, got %d", format, n, nb*blockBytes, dataLen)
	}
	return nb, nil
}

// DecodeQ8_0Row decodes len(dst) Q8_0 elements from data into dst: block k (34 bytes) is an f16
// scale d then 32 int8 values q, and element 32k+i is float32(d) * float32(q[i]). len(dst) must be
// a multiple of 32 and data must hold len(dst)/32 blocks; otherwise it returns an error.
func DecodeQ8_0Row(data []byte, dst []float32) error {
	nb, err := blockCount("Q8_0", len(dst), Q8_0BlockElems, Q8_0BlockBytes, len(data))
	if err != nil {
		return err
	}
	for b := 0; b < nb; b++ {
		blk := data[b*Q8_0BlockBytes : (b+1)*Q8_0BlockBytes]
		d := F16ToF32(binary.LittleEndian.Uint16(blk))
		for i := 0; i < Q8_0BlockElems; i++ {
			dst[b*Q8_0BlockElems+i] = d * float32(int8(blk[2+i]))
		}
	}
	return nil
}

// EncodeF32 returns x as little-endian f32 bytes (4*len(x) bytes).
func EncodeF32(x []float32) []byte {
	out := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
	}
	return out
}

// EncodeF16 returns x rounded to f16 (ties to even) as little-endian bytes (2*len(x) bytes).
func EncodeF16(x []float32) []byte {
	out := make([]byte, 2*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint16(out[2*i:], F32ToF16(v))
	}
	return out
}

// EncodeBF16 returns x rounded to bf16 (ties to even) as little-endian bytes (2*len(x) bytes).
func EncodeBF16(x []float32) []byte {
	out := make([]byte, 2*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint16(out[2*i:], F32ToBF16(v))
	}
	return out
}

// EncodeQ8_0 quantizes x to Q8_0 exactly as ggml's reference quantizer quantize_row_q8_0_ref
// (ggml/src/ggml-quants.c) does: per 32-element block, amax = max|x|, d = amax/127 and id = 1/d
// (0 when d is 0) in f32, q = roundf(x*id) with the product rounded to f32 and ties away from zero
// (math.Round), d stored as f16 (round to nearest even, GGML_FP32_TO_FP16). len(x) must be a
// multiple of 32; otherwise it returns an error.
func EncodeQ8_0(x []float32) ([]byte, error) {
	if len(x)%Q8_0BlockElems != 0 {
		return nil, fmt.Errorf("model: Q8_0 needs a multiple of %d elements, got %d", Q8_0BlockElems, len(x))
	}
	out := make([]byte, len(x)/Q8_0BlockElems*Q8_0BlockBytes)
	encodeQ8_0Into(out, x)
	return out, nil
}

// encodeQ8_0Into is EncodeQ8_0 writing into out (len(x)/32*34 bytes; len(x) a multiple of 32).
func encodeQ8_0Into(out []byte, x []float32) {
	nb := len(x) / Q8_0BlockElems
	for b := 0; b < nb; b++ {
		blk := x[b*Q8_0BlockElems : (b+1)*Q8_0BlockElems]
		var amax float32
		for _, v := range blk {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		o := out[b*Q8_0BlockBytes : (b+1)*Q8_0BlockBytes]
		binary.LittleEndian.PutUint16(o, F32ToF16(d))
		for i, v := range blk {
			q := math.Round(float64(v * id))
			o[2+i] = byte(int8(max(-127, min(127, q))))
		}
	}
}

// FloatRow decodes row r of a float tensor t into dst. t.Type must be F32, F16, BF16, Q8_0, Q4_K
// or Q6_K (DecodeQ4_KRow, DecodeQ6_KRow);
// t.Shape is GGUF order [cols] or [cols, rows] (a 1-D tensor has one row), and dst must have
// length cols. Errors name the tensor and give the expected versus found type, shape or size.
func FloatRow(t *Tensor, r int, dst []float32) error {
	if t == nil {
		return fmt.Errorf("model: FloatRow: nil tensor")
	}
	cols, rows, err := matrixDims(t)
	if err != nil {
		return err
	}
	if r < 0 || r >= rows {
		return fmt.Errorf("model: tensor %s: row %d out of range [0, %d)", t.Name, r, rows)
	}
	if len(dst) != cols {
		return fmt.Errorf("model: tensor %s: row has %d elements, destination %d", t.Name, cols, len(dst))
	}
	rowBytes, err := EncodedSize(t.Type, cols)
	if err != nil {
		return fmt.Errorf("model: tensor %s: %w", t.Name, err)
	}
	if len(t.Data) < rows*rowBytes {
		return fmt.Errorf("model: tensor %s: %d rows of %d bytes need %d bytes, got %d", t.Name, rows, rowBytes, rows*rowBytes, len(t.Data))
	}
	data := t.Data[r*rowBytes : (r+1)*rowBytes]
	switch t.Type {
	case TypeF32:
		return DecodeF32Row(data, dst)
	case TypeF16:
		return DecodeF16Row(data, dst)
	case TypeBF16:
		return DecodeBF16Row(data, dst)
	case TypeQ8_0:
		return DecodeQ8_0Row(data, dst)
	case TypeQ4_K:
		return DecodeQ4_KRow(data, dst)
	case TypeQ6_K:
		return DecodeQ6_KRow(data, dst)
	}
	return fmt.Errorf("model: tensor %s: type %d is not a float type (want F32, F16, BF16, Q8_0, Q4_K or Q6_K)", t.Name, uint32(t.Type))
}

// matrixDims returns (cols, rows) of a 1-D ([cols], one row) or 2-D ([cols, rows]) GGUF shape.
func matrixDims(t *Tensor) (cols, rows int, err error) {
	const limit = 1 << 40 // far above any real tensor; keeps products from overflowing int
	switch len(t.Shape) {
	case 1:
		if t.Shape[0] == 0 || t.Shape[0] > limit {
			return 0, 0, fmt.Errorf("model: tensor %s: bad shape %v", t.Name, t.Shape)
		}
		return int(t.Shape[0]), 1, nil
	case 2:
		if t.Shape[0] == 0 || t.Shape[1] == 0 || t.Shape[0] > limit || t.Shape[1] > limit || t.Shape[0]*t.Shape[1] > limit {
			return 0, 0, fmt.Errorf("model: tensor %s: bad shape %v", t.Name, t.Shape)
		}
		return int(t.Shape[0]), int(t.Shape[1]), nil
	}
	return 0, 0, fmt.Errorf("model: tensor %s: want a 1-D or 2-D shape, found %v", t.Name, t.Shape)
}
