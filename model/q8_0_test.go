package model

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEncodeQ8_0HandComputed checks EncodeQ8_0 against blocks worked out by hand from ggml's
// quantize_row_q8_0_ref: d = amax/127 stored as f16, q = roundf(x * (1/d)) with ties away from
// zero (2.5 -> 3, -1.5 -> -2: round-half-even would give 2 and -2, so the first block tells them
// apart), an all-zero block (d = 0, q = 0), and a d that f16 must round (1/127 -> 0x2008).
func TestEncodeQ8_0HandComputed(t *testing.T) {
	x := make([]float32, 4*Q8_0BlockElems)
	copy(x[0:], []float32{127, 2.5, -2.5, 1.5, -0.5, 0.49, -126.5}) // amax 127: d = 1, id = 1
	copy(x[64:], []float32{-254, 5, -3, 1, 0.9})                    // amax 254: d = 2, id = 0.5
	copy(x[96:], []float32{1, -0.25})                               // amax 1: d = 1/127
	want := []struct {
		d uint16
		q []int8
	}{
		{0x3c00, []int8{127, 3, -3, 2, -1, 0, -127}},
		{0x0000, nil},
		{0x4000, []int8{-127, 3, -2, 1, 0}},
		// 1/127 = 2^-7 * 1.00787...: the f16 fraction 0.00787*1024 = 8.06 rounds to 8.
		{0x2008, []int8{127, -32}}, // -0.25 * 127.0000x = -31.75 -> -32
	}
	got, err := EncodeQ8_0(x)
	require.NoError(t, err)
	require.Len(t, got, 4*Q8_0BlockBytes)
	for b, w := range want {
		blk := got[b*Q8_0BlockBytes : (b+1)*Q8_0BlockBytes]
		require.Equal(t, w.d, binary.LittleEndian.Uint16(blk), "block %d: d", b)
		q := make([]int8, Q8_0BlockElems)
		copy(q, w.q)
		for i := range q {
			require.Equal(t, q[i], int8(blk[2+i]), "block %d element %d", b, i)
		}
	}
	_, err = EncodeQ8_0(make([]float32, 33))
	require.ErrorContains(t, err, "multiple of 32")
}

// TestQuantizeQ8_0Matrix: every row of a re-quantized F16 / BF16 / F32 matrix is EncodeQ8_0 of
// the row decoded exactly (so the parallel split changes nothing), a Q8_0 matrix comes back as it
// is, and widths that are not whole blocks or non-float types are refused naming the tensor.
func TestQuantizeQ8_0Matrix(t *testing.T) {
	const cols, rows = 64, 37
	x := make([]float32, cols*rows)
	for i := range x {
		x[i] = float32(i%97-48) * 0.013 * float32(1+i/cols)
	}
	for _, typ := range []TensorType{TypeF32, TypeF16, TypeBF16} {
		var data []byte
		switch typ {
		case TypeF32:
			data = EncodeF32(x)
		case TypeF16:
			data = EncodeF16(x)
		case TypeBF16:
			data = EncodeBF16(x)
		}
		tt := &Tensor{Name: "output.weight", Type: typ, Shape: []uint64{cols, rows}, Data: data}
		q, err := QuantizeQ8_0Matrix(tt)
		require.NoError(t, err)
		require.Equal(t, TypeQ8_0, q.Type)
		require.Equal(t, []uint64{cols, rows}, q.Shape)
		row := make([]float32, cols)
		for r := range rows {
			require.NoError(t, FloatRow(tt, r, row))
			enc, err := EncodeQ8_0(row)
			require.NoError(t, err)
			require.Equal(t, enc, q.Data[r*len(enc):(r+1)*len(enc)], "%s row %d", typ, r)
		}
		again, err := QuantizeQ8_0Matrix(q)
		require.NoError(t, err)
		require.Same(t, q, again)
	}
	_, err := QuantizeQ8_0Matrix(&Tensor{Name: "w", Type: TypeF16, Shape: []uint64{48, 2}, Data: make([]byte, 192)})
	require.ErrorContains(t, err, "tensor w: 48 columns")
	_, err = QuantizeQ8_0Matrix(&Tensor{Name: "w", Type: TypeI2_S, Shape: []uint64{128, 2}, Data: make([]byte, 96)})
	require.ErrorContains(t, err, "tensor w: type I2_S")
}
