package model

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestF16Conversions(t *testing.T) {
	require.Equal(t, float32(1), F16ToF32(0x3C00))
	require.Equal(t, float32(-2), F16ToF32(0xC000))
	require.Equal(t, float32(65504), F16ToF32(0x7BFF))
	require.Equal(t, float32(math.Ldexp(1, -24)), F16ToF32(0x0001)) // smallest subnormal
	require.Equal(t, uint16(0x3C00), F32ToF16(1))
	// 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even gives 1.
	require.Equal(t, uint16(0x3C00), F32ToF16(1+1.0/2048))
	// 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even): rounds up to even.
	require.Equal(t, uint16(0x3C02), F32ToF16(1+3.0/2048))
	require.Equal(t, float32(1), RoundF16(1+1.0/4096))
	require.True(t, math.IsInf(float64(F16ToF32(F32ToF16(70000))), 1))
}

func TestBF16Conversions(t *testing.T) {
	require.Equal(t, float32(1), BF16ToF32(0x3F80))
	require.Equal(t, float32(-2), BF16ToF32(0xC000))
	require.Equal(t, uint16(0x3F80), F32ToBF16(1))
	// 1 + 2^-8 is halfway between 1 (even) and 1 + 2^-7: ties to even gives 1.
	require.Equal(t, uint16(0x3F80), F32ToBF16(1+1.0/256))
	// 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6: rounds up.
	require.Equal(t, uint16(0x3F82), F32ToBF16(1+3.0/256))
	require.True(t, math.IsNaN(float64(BF16ToF32(F32ToBF16(float32(math.NaN()))))))
}

func TestEncodedSize(t *testing.T) {
	for _, c := range []struct {
		typ  TensorType
		n    int
		want int
	}{
		{TypeF32, 10, 40}, {TypeF16, 10, 20}, {TypeBF16, 10, 20}, {TypeQ8_0, 64, 68},
		{TypeI2_S, 256, 96}, {TypeTQ1_0, 512, 108}, {TypeTQ2_0, 256, 66},
	} {
		got, err := EncodedSize(c.typ, c.n)
		require.NoError(t, err)
		require.Equal(t, c.want, got, "type %d", c.typ)
	}
	_, err := EncodedSize(TypeQ8_0, 33)
	require.ErrorContains(t, err, "multiple of 32")
	_, err = EncodedSize(TypeI2_S, 64)
	require.ErrorContains(t, err, "multiple of 128")
	_, err = EncodedSize(TensorType(99), 1)
	require.Error(t, err)
}

func TestQ8_0Row(t *testing.T) {
	// Hand-built block: d = 0.5 (f16 0x3800), q = 2, -3, 127 then zeros.
	blk := make([]byte, 34)
	blk[0], blk[1] = 0x00, 0x38
	blk[2], blk[3], blk[4] = 2, 0xFD, 127
	dst := make([]float32, 32)
	require.NoError(t, DecodeQ8_0Row(blk, dst))
	want := make([]float32, 32)
	want[0], want[1], want[2] = 1, -1.5, 63.5
	require.Equal(t, want, dst)

	require.ErrorContains(t, DecodeQ8_0Row(blk[:33], dst), "needs 34 bytes, got 33")
	require.ErrorContains(t, DecodeQ8_0Row(blk, dst[:31]), "not a multiple of 32")

	// Encode: max|x| = 127 -> d = 1, values are exact integers.
	x := make([]float32, 32)
	x[0], x[5], x[31] = 127, -3, 42
	enc, err := EncodeQ8_0(x)
	require.NoError(t, err)
	back := make([]float32, 32)
	require.NoError(t, DecodeQ8_0Row(enc, back))
	require.Equal(t, x, back)
}

func TestFloatRow(t *testing.T) {
	vals := []float32{1, 2, 3, -4, 0.5, 6}
	for _, c := range []struct {
		typ  TensorType
		data []byte
	}{
		{TypeF32, EncodeF32(vals)}, {TypeF16, EncodeF16(vals)}, {TypeBF16, EncodeBF16(vals)},
	} {
		tt := &Tensor{Name: "token_embd.weight", Type: c.typ, Shape: []uint64{3, 2}, Data: c.data}
		dst := make([]float32, 3)
		require.NoError(t, FloatRow(tt, 1, dst))
		require.Equal(t, []float32{-4, 0.5, 6}, dst)
		require.ErrorContains(t, FloatRow(tt, 2, dst), "row 2 out of range")
		require.ErrorContains(t, FloatRow(tt, 0, dst[:2]), "destination 2")
	}
	short := &Tensor{Name: "token_embd.weight", Type: TypeF16, Shape: []uint64{3, 2}, Data: make([]byte, 11)}
	require.ErrorContains(t, FloatRow(short, 0, make([]float32, 3)), "need 12 bytes, got 11")
	tern := &Tensor{Name: "x", Type: TypeTQ2_0, Shape: []uint64{256, 1}, Data: make([]byte, 66)}
	require.ErrorContains(t, FloatRow(tern, 0, make([]float32, 256)), "not a float type")
}
