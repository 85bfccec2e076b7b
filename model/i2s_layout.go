package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// I2SLayout is one of the byte orders in which microsoft/BitNet's quantize_i2_s
// (src/ggml-bitnet-mad.cpp) writes GGUF type I2_S. All three pack the same trits (codes 0/1/2 =
// −1/0/+1, 2 bits each) into n/4 bytes followed by the f32 per-tensor scale and padding to 32
// bytes, so the tensor size is the same; the GGUF metadata (general.file_type 40 =
// LLAMA_FTYPE_MOSTLY_I2_S, general.quantization_version) records none of them. Which one a file
// holds depends on the machine and build that ran llama-quantize:
//
//   - I2SLayoutX86: x86 builds with ACT_PARALLEL, which include/gemm-config.h defines (the
//     default, and the only layout before 2025-11): 128-element blocks of 32 bytes, byte j
//     holding elements j, j+32, j+64, j+96 at shifts 6, 4, 2, 0. The official 2B4T GGUF.
//   - I2SLayoutARM: ARM NEON builds since microsoft/BitNet 112f853 (2025-11-19, QK_I2_S 64):
//     64-element blocks of 16 bytes, byte j holding elements j, j+16, j+32, j+48.
//   - I2SLayout1x4: x86 builds without ACT_PARALLEL (gemm-config.h edited): rows taken four at a
//     time, byte rg*cols + c holding column c of rows 4rg, 4rg+1, 4rg+2, 4rg+3 at shifts 6, 4, 2, 0.
//
// TL1/TL2 (types 38/39) are other GGUF types, not I2_S variants.
type I2SLayout string

// The I2_S layouts; I2SLayoutX86 is what bitgpu writes and assumes by default.
const (
	I2SLayoutX86 I2SLayout = "x86"
	I2SLayoutARM I2SLayout = "arm"
	I2SLayout1x4 I2SLayout = "1x4"
)

// ParseI2SLayout reads a layout name ("x86", "arm", "1x4"); anything else is an error listing them.
func ParseI2SLayout(s string) (I2SLayout, error) {
	switch l := I2SLayout(strings.ToLower(s)); l {
	case I2SLayoutX86, I2SLayoutARM, I2SLayout1x4:
		return l, nil
	}
	return "", fmt.Errorf("I2_S layout %q is not one of x86, arm, 1x4", s)
}

// i2sSource returns, for element e (row-major over rows×cols) of a tensor stored in layout l, the
// byte index and bit shift holding its code.
func i2sSource(l I2SLayout, e, cols int) (byteIdx int, shift uint) {
	switch l {
	case I2SLayoutARM:
		blk, w := e/64, e%64
		return blk*16 + w%16, uint(6 - 2*(w/16))
	case I2SLayout1x4:
		r, c := e/cols, e%cols
		return (r/4)*cols + c, uint(6 - 2*(r%4))
	}
	blk, w := e/I2SBlockElems, e%I2SBlockElems
	return blk*I2SBlockBytes + w%32, uint(6 - 2*(w/32))
}

// checkI2SLayoutShape reports whether a rows×cols tensor can be stored in layout l.
func checkI2SLayoutShape(l I2SLayout, rows, cols int) error {
	n := rows * cols
	switch {
	case rows <= 0 || cols <= 0:
		return fmt.Errorf("I2_S shape %dx%d is empty", rows, cols)
	case l == I2SLayoutARM && n%64 != 0:
		return fmt.Errorf("I2_S layout arm needs a multiple of 64 elements, got %d", n)
	case l == I2SLayout1x4 && rows%4 != 0:
		return fmt.Errorf("I2_S layout 1x4 needs a multiple of 4 rows, got %d", rows)
	case l == I2SLayoutX86 && n%I2SBlockElems != 0:
		return fmt.Errorf("I2_S layout x86 needs a multiple of %d elements, got %d", I2SBlockElems, n)
	}
	return nil
}

// DecodeI2SLayout unpacks a rows×cols I2_S tensor stored in layout l into row-major trits and its
// scale.
func DecodeI2SLayout(data []byte, rows, cols int, l I2SLayout) ([]int8, float32, error) {
	if err := checkI2SLayoutShape(l, rows, cols); err != nil {
		return nil, 0, err
	}
	n := rows * cols
	if len(data) < n/4+4 {
		return nil, 0, fmt.Errorf("model: I2_S data for %d elements needs %d bytes, got %d", n, n/4+4, len(data))
	}
	trits := make([]int8, n)
	for e := range trits {
		b, s := i2sSource(l, e, cols)
		trits[e] = i2sTrit[(data[b]>>s)&3]
	}
	return trits, math.Float32frombits(binary.LittleEndian.Uint32(data[n/4:])), nil
}

// EncodeI2SLayout packs row-major trits of a rows×cols tensor in layout l, scale after them (the
// inverse of DecodeI2SLayout; for tests and for writing what a given build would have written).
func EncodeI2SLayout(trits []int8, rows, cols int, scale float32, l I2SLayout) ([]byte, error) {
	if err := checkI2SLayoutShape(l, rows, cols); err != nil {
		return nil, err
	}
	if err := checkTrits(trits); err != nil {
		return nil, err
	}
	if len(trits) != rows*cols {
		return nil, fmt.Errorf("model: %d trits for a %dx%d tensor", len(trits), rows, cols)
	}
	n := rows * cols
	out := make([]byte, n/4+I2SScaleBytes)
	for e, t := range trits {
		b, s := i2sSource(l, e, cols)
		out[b] |= byte(t+1) << s
	}
	binary.LittleEndian.PutUint32(out[n/4:], math.Float32bits(scale))
	return out, nil
}

// RepackI2SToX86 returns the bytes of an I2_S tensor of shape [cols, rows] (GGUF order) stored in
// layout l, rewritten in I2SLayoutX86, which every bitgpu backend reads. For I2SLayoutX86 it
// returns data unchanged.
func RepackI2SToX86(t *Tensor, l I2SLayout) ([]byte, error) {
	if t.Type != TypeI2_S || len(t.Shape) != 2 {
		return nil, fmt.Errorf("model: tensor %s: want a 2-D I2_S tensor", t.Name)
	}
	if l == I2SLayoutX86 {
		return t.Data, nil
	}
	cols, rows := int(t.Shape[0]), int(t.Shape[1])
	trits, scale, err := DecodeI2SLayout(t.Data, rows, cols, l)
	if err != nil {
		return nil, fmt.Errorf("model: tensor %s: %v", t.Name, err)
	}
	out, err := EncodeI2S(trits, scale)
	if err != nil {
		return nil, fmt.Errorf("model: tensor %s: %v", t.Name, err)
	}
	return out, nil
}

// ApplyI2SLayout declares that m's I2_S tensors were written in layout l and rewrites each one, in
// memory, in I2SLayoutX86 (a copy; the file is not touched). Nothing in a GGUF file says which
// layout it holds (see I2SLayout), so this is the user's `--i2s-layout` choice.
func ApplyI2SLayout(m *Model, l I2SLayout) error {
	if l == I2SLayoutX86 {
		return nil
	}
	for _, t := range m.Tensors {
		if t.Type != TypeI2_S {
			continue
		}
		data, err := RepackI2SToX86(t, l)
		if err != nil {
			return err
		}
		t.Data = data
	}
	return nil
}
