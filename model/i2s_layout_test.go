package model

import (
	"encoding/binary"
	"math"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"
)

// refQuantizeI2S transcribes the three packing loops of microsoft/BitNet's quantize_i2_s
// (src/ggml-bitnet-mad.cpp at 16da220: the x86 ACT_PARALLEL branch, the x86 1x4 branch and the
// ARM NEON branch) over codes q8 = trit+1, as the test oracle.
func refQuantizeI2S(trits []int8, nrow, nPerRow int, scale float32, l I2SLayout) []byte {
	n := nrow * nPerRow
	dst := make([]byte, n/4+32)
	q8 := make([]byte, n)
	for i, t := range trits {
		q8[i] = byte(t + 1)
	}
	switch l {
	case I2SLayoutX86: // QK_I2_S 128
		for i := 0; i < n/128; i++ {
			for j := 0; j < 128; j++ {
				dst[i*32+j%32] |= q8[i*128+j] << (6 - 2*(j/32))
			}
		}
	case I2SLayoutARM: // QK_I2_S 64
		for i := 0; i < n/64; i++ {
			for j := 0; j < 64; j++ {
				dst[i*16+j%16] |= q8[i*64+j] << (6 - 2*(j/16))
			}
		}
	case I2SLayout1x4:
		for rg := 0; rg < nrow/4; rg++ {
			for col := 0; col < nPerRow; col++ {
				q := func(r int) byte { return q8[(rg*4+r)*nPerRow+col] }
				dst[rg*nPerRow+col] = q(0)<<6 | q(1)<<4 | q(2)<<2 | q(3)
			}
		}
	}
	binary.LittleEndian.PutUint32(dst[n/4:], math.Float32bits(scale))
	return dst
}

func TestI2SLayoutsMatchReference(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	rows, cols := 8, 256
	trits := make([]int8, rows*cols)
	for i := range trits {
		trits[i] = int8(rng.Intn(3) - 1)
	}
	x86, err := EncodeI2S(trits, 0.5)
	require.NoError(t, err)
	for _, l := range []I2SLayout{I2SLayoutX86, I2SLayoutARM, I2SLayout1x4} {
		ref := refQuantizeI2S(trits, rows, cols, 0.5, l)
		enc, err := EncodeI2SLayout(trits, rows, cols, 0.5, l)
		require.NoError(t, err, l)
		require.Equal(t, ref, enc, l)
		got, scale, err := DecodeI2SLayout(ref, rows, cols, l)
		require.NoError(t, err, l)
		require.Equal(t, trits, got, l)
		require.Equal(t, float32(0.5), scale)
		repacked, err := RepackI2SToX86(&Tensor{Name: "w", Type: TypeI2_S, Shape: []uint64{uint64(cols), uint64(rows)}, Data: ref}, l)
		require.NoError(t, err, l)
		require.Equal(t, x86, repacked, l)
		if l != I2SLayoutX86 {
			require.NotEqual(t, x86[:rows*cols/4], ref[:rows*cols/4], "%s is a distinct layout", l)
		}
	}
	// Hand vector (ARM): 64 zeros (code 1: bytes 0x55) except element 17 = +1, which sits in
	// byte 17%16 = 1 at shift 6-2*(17/16) = 4: byte 1 = 0b01_10_01_01 = 0x65.
	arm := make([]byte, 16+32)
	for i := range arm[:16] {
		arm[i] = 0x55
	}
	arm[1] = 0x65
	got, _, err := DecodeI2SLayout(arm, 1, 64, I2SLayoutARM)
	require.NoError(t, err)
	want := make([]int8, 64)
	want[17] = 1
	require.Equal(t, want, got)
}

func TestApplyI2SLayout(t *testing.T) {
	trits := make([]int8, 4*128)
	for i := range trits {
		trits[i] = int8(i%3 - 1)
	}
	arm := refQuantizeI2S(trits, 4, 128, 2, I2SLayoutARM)
	m := &Model{Tensors: map[string]*Tensor{
		"w": {Name: "w", Type: TypeI2_S, Shape: []uint64{128, 4}, Data: arm},
		"n": {Name: "n", Type: TypeF32, Shape: []uint64{4}, Data: make([]byte, 16)},
	}}
	require.NoError(t, ApplyI2SLayout(m, I2SLayoutARM))
	got, scale, err := DecodeI2S(m.Tensors["w"].Data, len(trits))
	require.NoError(t, err)
	require.Equal(t, trits, got)
	require.Equal(t, float32(2), scale)

	_, err = ParseI2SLayout("tl2")
	require.ErrorContains(t, err, `"tl2"`)
	l, err := ParseI2SLayout("ARM")
	require.NoError(t, err)
	require.Equal(t, I2SLayoutARM, l)
	m.Tensors["w"].Shape = []uint64{128, 3}
	m.Tensors["w"].Data = arm[:3*32+32]
	require.ErrorContains(t, ApplyI2SLayout(m, I2SLayout1x4), "multiple of 4 rows")
}
