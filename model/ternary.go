package model

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Ternary encodings (the README's formats section). Every encoder takes trits in {-1, 0, +1}, one int8 per
// element in flattened row-major order, and every decoder returns them the same way.

// I2_S geometry (type 36, microsoft/BitNet's llama.cpp fork): 128-element blocks of 32 bytes,
// then one f32 per-tensor scale padded to 32 bytes.
const (
	I2SBlockElems = 128
	I2SBlockBytes = 32
	I2SScaleBytes = 32
)

// TQ1_0 and TQ2_0 geometry (types 34 and 35, upstream llama.cpp): 256-element blocks, each with
// its own f16 scale d. A TQ1_0 block is 48 bytes qs, 4 bytes qh, 2 bytes d; a TQ2_0 block is
// 64 bytes qs, 2 bytes d.
const (
	TQBlockElems    = 256
	TQ1_0BlockBytes = 54
	TQ2_0BlockBytes = 66
)

// checkTrits reports the first element of trits outside {-1, 0, 1}.
func checkTrits(trits []int8) error {
	for i, t := range trits {
		if t < -1 || t > 1 {
			return fmt.Errorf("model: element %d is %d, not a trit in {-1, 0, 1}", i, t)
		}
	}
	return nil
}

// EncodeI2S packs trits (length n, a multiple of 128) and the per-tensor scale into I2_S: for
// each 128-element block, byte j (0..31) holds elements j, j+32, j+64, j+96 at bit shifts 6, 4, 2,
// 0 as codes 0/1/2 = -1/0/+1; after the n/4 packed bytes comes scale as a little-endian f32,
// zero-padded to 32 bytes, for n/4 + 32 bytes in all. It returns an error when n is not a
// positive multiple of 128 or an element is not a trit.
func EncodeI2S(trits []int8, scale float32) ([]byte, error) {
	n := len(trits)
	if n == 0 || n%I2SBlockElems != 0 {
		return nil, fmt.Errorf("model: I2_S needs a positive multiple of %d elements, got %d", I2SBlockElems, n)
	}
	if err := checkTrits(trits); err != nil {
		return nil, err
	}
	out := make([]byte, n/4+I2SScaleBytes)
	for b := 0; b < n/I2SBlockElems; b++ {
		blk := trits[b*I2SBlockElems:]
		o := out[b*I2SBlockBytes:]
		for j := 0; j < 32; j++ {
			o[j] = byte(blk[j]+1)<<6 | byte(blk[j+32]+1)<<4 | byte(blk[j+64]+1)<<2 | byte(blk[j+96]+1)
		}
	}
	binary.LittleEndian.PutUint32(out[n/4:], math.Float32bits(scale))
	return out, nil
}

// DecodeI2S unpacks n elements (a positive multiple of 128) of I2_S data (layout in EncodeI2S)
// into trits and the per-tensor scale. Code 3, which no encoder writes, decodes as 0. It returns
// an error when n is not a positive multiple of 128 or data is shorter than n/4 + 4 bytes (the
// scale's padding may be absent at the very end of a file).
func DecodeI2S(data []byte, n int) ([]int8, float32, error) {
	if n <= 0 || n%I2SBlockElems != 0 {
		return nil, 0, fmt.Errorf("model: I2_S needs a positive multiple of %d elements, got %d", I2SBlockElems, n)
	}
	if len(data) < n/4+4 {
		return nil, 0, fmt.Errorf("model: I2_S data for %d elements needs %d bytes (packed trits and the f32 scale), got %d", n, n/4+4, len(data))
	}
	trits := make([]int8, n)
	for b := 0; b < n/I2SBlockElems; b++ {
		decodeI2SBlock(data[b*I2SBlockBytes:(b+1)*I2SBlockBytes], trits[b*I2SBlockElems:(b+1)*I2SBlockElems])
	}
	return trits, math.Float32frombits(binary.LittleEndian.Uint32(data[n/4:])), nil
}

// i2sTrit maps a 2-bit I2_S code to its trit; code 3 is unused and reads as 0.
var i2sTrit = [4]int8{-1, 0, 1, 0}

// decodeI2SBlock unpacks one 32-byte I2_S block into 128 trits.
func decodeI2SBlock(src []byte, dst []int8) {
	_ = src[31]
	_ = dst[127]
	for j := 0; j < 32; j++ {
		c := src[j]
		dst[j] = i2sTrit[c>>6]
		dst[j+32] = i2sTrit[(c>>4)&3]
		dst[j+64] = i2sTrit[(c>>2)&3]
		dst[j+96] = i2sTrit[c&3]
	}
}

// i2sElem returns flattened element e of I2_S packed data.
func i2sElem(data []byte, e int) int8 {
	blk, w := e/I2SBlockElems, e%I2SBlockElems
	c := data[blk*I2SBlockBytes+w%32]
	return i2sTrit[(c>>(6-2*(w/32)))&3]
}

// tqArgs validates the common arguments of the TQ encoders.
func tqArgs(format string, trits []int8, scales []float32) error {
	n := len(trits)
	if n == 0 || n%TQBlockElems != 0 {
		return fmt.Errorf("model: %s needs a positive multiple of %d elements, got %d", format, TQBlockElems, n)
	}
	if len(scales) != n/TQBlockElems {
		return fmt.Errorf("model: %s of %d elements needs %d block scales, got %d", format, n, n/TQBlockElems, len(scales))
	}
	return checkTrits(trits)
}

// tqDecodeArgs validates the common arguments of the TQ decoders.
func tqDecodeArgs(format string, data []byte, n, blockBytes int) error {
	if n <= 0 || n%TQBlockElems != 0 {
		return fmt.Errorf("model: %s needs a positive multiple of %d elements, got %d", format, TQBlockElems, n)
	}
	if need := n / TQBlockElems * blockBytes; len(data) < need {
		return fmt.Errorf("model: %s data for %d elements needs %d bytes, got %d", format, n, need, len(data))
	}
	return nil
}

// EncodeTQ2_0 packs trits (length n, a multiple of 256) with one scale per 256-element block
// (len(scales) = n/256, stored as f16, ties to even) into TQ2_0: per block 64 bytes qs then the
// little-endian f16 d (66 bytes). For chunk c in {0, 1} and shift l in 0..3, bits 2l..2l+1 of
// qs[32c + m] hold element 128c + 32l + m as trit+1. It returns an error for a bad n, a wrong
// number of scales, or an element that is not a trit.
func EncodeTQ2_0(trits []int8, scales []float32) ([]byte, error) {
	if err := tqArgs("TQ2_0", trits, scales); err != nil {
		return nil, err
	}
	nb := len(trits) / TQBlockElems
	out := make([]byte, nb*TQ2_0BlockBytes)
	for b := 0; b < nb; b++ {
		blk := trits[b*TQBlockElems:]
		o := out[b*TQ2_0BlockBytes:]
		for c := 0; c < 2; c++ {
			for m := 0; m < 32; m++ {
				var q byte
				for l := 0; l < 4; l++ {
					q |= byte(blk[128*c+32*l+m]+1) << (2 * l)
				}
				o[32*c+m] = q
			}
		}
		binary.LittleEndian.PutUint16(o[64:], F32ToF16(scales[b]))
	}
	return out, nil
}

// DecodeTQ2_0 unpacks n elements (a positive multiple of 256) of TQ2_0 data (layout in
// EncodeTQ2_0) into trits and the n/256 block scales. Code 3 reads as 0. It returns an error for a
// bad n or data shorter than n/256*66 bytes.
func DecodeTQ2_0(data []byte, n int) ([]int8, []float32, error) {
	if err := tqDecodeArgs("TQ2_0", data, n, TQ2_0BlockBytes); err != nil {
		return nil, nil, err
	}
	nb := n / TQBlockElems
	trits := make([]int8, n)
	scales := make([]float32, nb)
	for b := 0; b < nb; b++ {
		scales[b] = decodeTQ2_0Block(data[b*TQ2_0BlockBytes:(b+1)*TQ2_0BlockBytes], trits[b*TQBlockElems:(b+1)*TQBlockElems])
	}
	return trits, scales, nil
}

// decodeTQ2_0Block unpacks one 66-byte TQ2_0 block into 256 trits and returns its scale.
func decodeTQ2_0Block(src []byte, dst []int8) float32 {
	_ = src[65]
	_ = dst[255]
	for c := 0; c < 2; c++ {
		for l := 0; l < 4; l++ {
			for m := 0; m < 32; m++ {
				dst[128*c+32*l+m] = i2sTrit[(src[32*c+m]>>(2*l))&3]
			}
		}
	}
	return F16ToF32(binary.LittleEndian.Uint16(src[64:]))
}

// pow3 holds 3^0 .. 3^4, the multipliers that bring trit n of a TQ1_0 byte to the top.
var pow3 = [5]byte{1, 3, 9, 27, 81}

// TQ1Trit returns trit n (0 = most significant, n in 0..4) of a TQ1_0 byte, -1, 0 or +1: the
// byte is a fixed-point fraction v/243 of 256, multiplying by 3^n (wrapping at 8 bits) drops the
// n leading digits, and the top digit of what is left is (x*3) >> 8 (ggml-quants.c,
// dequantize_row_tq1_0). The GPU's base-3 layout decodes its bytes the same way.
func TQ1Trit(b byte, n int) int8 {
	x := b * pow3[n] // wraps at 8 bits on purpose
	return int8((uint16(x)*3)>>8) - 1
}

// TQ1Pack packs up to 5 trits (-1, 0, +1; as base-3 digits trit+1, most significant first) into
// one TQ1_0 byte: ceil(v * 256 / 243), where v is the 5-digit base-3 value (4 digits are followed
// by a 0 digit), as ggml-quants.c's quantize_row_tq1_0_ref writes it. TQ1Trit inverts it.
func TQ1Pack(trits ...int8) byte {
	var v uint16
	for _, t := range trits {
		v = 3*v + uint16(t+1)
	}
	for i := len(trits); i < 5; i++ {
		v *= 3
	}
	return byte((v*256 + 242) / 243)
}

// EncodeTQ1_0 packs trits (length n, a multiple of 256) with one scale per 256-element block
// (len(scales) = n/256, stored as f16, ties to even) into TQ1_0: per block 48 bytes qs, 4 bytes
// qh, the little-endian f16 d (54 bytes). qs[m] (m < 32) holds elements 32k+m for k = 0..4,
// qs[32+m] (m < 16) holds elements 160+16k+m, and qh[j] holds elements 240+4k+j (k = 0..3); the
// digits trit+1 (k = 0 most significant, a 4-digit group followed by a 0 digit) form a base-3
// value v < 243 and the byte is ceil(v*256/243), as llama.cpp's reference quantizer writes it. It
// returns an error for a bad n, a wrong number of scales, or an element that is not a trit.
func EncodeTQ1_0(trits []int8, scales []float32) ([]byte, error) {
	if err := tqArgs("TQ1_0", trits, scales); err != nil {
		return nil, err
	}
	nb := len(trits) / TQBlockElems
	out := make([]byte, nb*TQ1_0BlockBytes)
	for b := 0; b < nb; b++ {
		x := trits[b*TQBlockElems:]
		o := out[b*TQ1_0BlockBytes:]
		for m := 0; m < 32; m++ {
			o[m] = TQ1Pack(x[m], x[32+m], x[64+m], x[96+m], x[128+m])
		}
		for m := 0; m < 16; m++ {
			o[32+m] = TQ1Pack(x[160+m], x[176+m], x[192+m], x[208+m], x[224+m])
		}
		for j := 0; j < 4; j++ {
			o[48+j] = TQ1Pack(x[240+j], x[244+j], x[248+j], x[252+j])
		}
		binary.LittleEndian.PutUint16(o[52:], F32ToF16(scales[b]))
	}
	return out, nil
}

// DecodeTQ1_0 unpacks n elements (a positive multiple of 256) of TQ1_0 data (layout in
// EncodeTQ1_0) into trits and the n/256 block scales. Trit k of byte b is
// ((uint8(b * 3^k)) * 3) >> 8, minus 1, the product wrapping at 8 bits. It returns an error for a
// bad n or data shorter than n/256*54 bytes.
func DecodeTQ1_0(data []byte, n int) ([]int8, []float32, error) {
	if err := tqDecodeArgs("TQ1_0", data, n, TQ1_0BlockBytes); err != nil {
		return nil, nil, err
	}
	nb := n / TQBlockElems
	trits := make([]int8, n)
	scales := make([]float32, nb)
	for b := 0; b < nb; b++ {
		scales[b] = decodeTQ1_0Block(data[b*TQ1_0BlockBytes:(b+1)*TQ1_0BlockBytes], trits[b*TQBlockElems:(b+1)*TQBlockElems])
	}
	return trits, scales, nil
}

// decodeTQ1_0Block unpacks one 54-byte TQ1_0 block into 256 trits and returns its scale.
func decodeTQ1_0Block(src []byte, dst []int8) float32 {
	_ = src[53]
	_ = dst[255]
	for k := 0; k < 5; k++ {
		for m := 0; m < 32; m++ {
			dst[32*k+m] = TQ1Trit(src[m], k)
		}
		for m := 0; m < 16; m++ {
			dst[160+16*k+m] = TQ1Trit(src[32+m], k)
		}
	}
	for k := 0; k < 4; k++ {
		for j := 0; j < 4; j++ {
			dst[240+4*k+j] = TQ1Trit(src[48+j], k)
		}
	}
	return F16ToF32(binary.LittleEndian.Uint16(src[52:]))
}

// QuantizeAbsmean quantizes latent weights w to trits with the BitNet b1.58 absmean rule
// (Ma et al. 2024, "The Era of 1-bit LLMs", eq. 1-3): scale = mean|w| (accumulated in float64),
// trit = clamp(roundEven(w / max(scale, 1e-5)), -1, 1). It returns the trits (len(w)) and the
// scale, which dequantizes them (w ≈ trit * scale). An empty w gives scale 0.
func QuantizeAbsmean(w []float32) ([]int8, float32) {
	trits := make([]int8, len(w))
	if len(w) == 0 {
		return trits, 0
	}
	var sum float64
	for _, v := range w {
		sum += math.Abs(float64(v))
	}
	scale := float32(sum / float64(len(w)))
	div := max(scale, 1e-5)
	for i, v := range w {
		q := math.RoundToEven(float64(v / div))
		trits[i] = int8(max(-1, min(1, q)))
	}
	return trits, scale
}

// TernaryMatrix is a read-only view of a ternary weight matrix in its on-disk encoding, giving
// one row at a time without decoding the whole tensor. Rows are outputs and Cols inputs: the GGUF
// shape is [Cols, Rows] and element (r, c) is flattened element r*Cols + c.
//
// Each row's weight scales come in groups of GroupSize() consecutive columns: I2_S has one
// per-tensor scale (GroupSize = Cols), TQ1_0 and TQ2_0 one f16 scale per 256-element block
// (GroupSize = 256, and Cols must be a multiple of 256 so blocks do not straddle rows).
type TernaryMatrix struct {
	Name       string     // tensor name, for errors
	Type       TensorType // TypeI2_S, TypeTQ1_0 or TypeTQ2_0
	Rows, Cols int
	Data       []byte // the encoded tensor
	scale      float32
}

// NewTernaryMatrix checks that t is a 2-D I2_S, TQ1_0 or TQ2_0 tensor whose data covers its
// shape and returns a view of it. Errors name the tensor and give the expected versus found type,
// shape or byte count.
func NewTernaryMatrix(t *Tensor) (*TernaryMatrix, error) {
	if t == nil {
		return nil, fmt.Errorf("model: NewTernaryMatrix: nil tensor")
	}
	if len(t.Shape) != 2 {
		return nil, fmt.Errorf("model: tensor %s: want a 2-D [cols, rows] ternary matrix, found shape %v", t.Name, t.Shape)
	}
	cols, rows, err := matrixDims(t)
	if err != nil {
		return nil, err
	}
	m := &TernaryMatrix{Name: t.Name, Type: t.Type, Rows: rows, Cols: cols, Data: t.Data}
	n := rows * cols
	switch t.Type {
	case TypeI2_S:
		if n%I2SBlockElems != 0 {
			return nil, fmt.Errorf("model: tensor %s: I2_S needs rows*cols a multiple of %d, found shape %v", t.Name, I2SBlockElems, t.Shape)
		}
		if len(t.Data) < n/4+4 {
			return nil, fmt.Errorf("model: tensor %s: I2_S shape %v needs %d bytes (packed trits and the f32 scale), found %d", t.Name, t.Shape, n/4+4, len(t.Data))
		}
		m.scale = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[n/4:]))
	case TypeTQ1_0, TypeTQ2_0:
		if cols%TQBlockElems != 0 {
			return nil, fmt.Errorf("model: tensor %s: %s needs cols a multiple of %d, found shape %v", t.Name, typeName(t.Type), TQBlockElems, t.Shape)
		}
		need, _ := EncodedSize(t.Type, n)
		if len(t.Data) < need {
			return nil, fmt.Errorf("model: tensor %s: %s shape %v needs %d bytes, found %d", t.Name, typeName(t.Type), t.Shape, need, len(t.Data))
		}
	default:
		return nil, fmt.Errorf("model: tensor %s: want a ternary type (I2_S, TQ1_0 or TQ2_0), found type %d", t.Name, uint32(t.Type))
	}
	return m, nil
}

// typeName names the ternary types for messages.
func typeName(t TensorType) string {
	switch t {
	case TypeI2_S:
		return "I2_S"
	case TypeTQ1_0:
		return "TQ1_0"
	case TypeTQ2_0:
		return "TQ2_0"
	}
	return fmt.Sprintf("type %d", uint32(t))
}

// GroupSize is the number of consecutive columns of a row that share one weight scale: Cols for
// I2_S, 256 for TQ1_0 and TQ2_0.
func (m *TernaryMatrix) GroupSize() int {
	if m.Type == TypeI2_S {
		return m.Cols
	}
	return TQBlockElems
}

// I2SScale returns the per-tensor weight scale of an I2_S matrix and true, or 0 and false for the
// other types (whose scales are per 256-element block; see Row).
func (m *TernaryMatrix) I2SScale() (float32, bool) {
	if m.Type != TypeI2_S {
		return 0, false
	}
	return m.scale, true
}

// Groups is the number of weight scales per row, Cols / GroupSize().
func (m *TernaryMatrix) Groups() int { return m.Cols / m.GroupSize() }

// Row decodes row r into trits (length Cols) and its weight scales into scales (length Groups());
// scales[g] applies to columns g*GroupSize() .. (g+1)*GroupSize()-1. It returns an error when r is
// out of range or a destination has the wrong length.
func (m *TernaryMatrix) Row(r int, trits []int8, scales []float32) error {
	if r < 0 || r >= m.Rows {
		return fmt.Errorf("model: tensor %s: row %d out of range [0, %d)", m.Name, r, m.Rows)
	}
	if len(trits) != m.Cols {
		return fmt.Errorf("model: tensor %s: row has %d elements, destination %d", m.Name, m.Cols, len(trits))
	}
	if len(scales) != m.Groups() {
		return fmt.Errorf("model: tensor %s: row has %d scales, destination %d", m.Name, m.Groups(), len(scales))
	}
	switch m.Type {
	case TypeI2_S:
		scales[0] = m.scale
		start := r * m.Cols
		c := 0
		// Element by element up to a block boundary, whole blocks, then the tail.
		for ; c < m.Cols && (start+c)%I2SBlockElems != 0; c++ {
			trits[c] = i2sElem(m.Data, start+c)
		}
		for ; c+I2SBlockElems <= m.Cols; c += I2SBlockElems {
			off := (start + c) / 4
			decodeI2SBlock(m.Data[off:off+I2SBlockBytes], trits[c:c+I2SBlockElems])
		}
		for ; c < m.Cols; c++ {
			trits[c] = i2sElem(m.Data, start+c)
		}
	case TypeTQ2_0, TypeTQ1_0:
		bb := TQ2_0BlockBytes
		dec := decodeTQ2_0Block
		if m.Type == TypeTQ1_0 {
			bb, dec = TQ1_0BlockBytes, decodeTQ1_0Block
		}
		first := r * m.Groups()
		for g := range scales {
			off := (first + g) * bb
			scales[g] = dec(m.Data[off:off+bb], trits[g*TQBlockElems:(g+1)*TQBlockElems])
		}
	default:
		return fmt.Errorf("model: tensor %s: not a ternary type: %d", m.Name, uint32(m.Type))
	}
	return nil
}
