package model

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// randTrits returns n reproducible pseudo-random trits.
func randTrits(seed uint64, n int) []int8 {
	r := rand.New(rand.NewPCG(seed, 1))
	t := make([]int8, n)
	for i := range t {
		t[i] = int8(r.IntN(3)) - 1
	}
	return t
}

func TestI2SRoundTrip(t *testing.T) {
	for _, n := range []int{128, 256, 1280} {
		trits := randTrits(uint64(n), n)
		data, err := EncodeI2S(trits, 0.75)
		require.NoError(t, err)
		require.Len(t, data, n/4+32)
		got, scale, err := DecodeI2S(data, n)
		require.NoError(t, err)
		require.Equal(t, trits, got)
		require.Equal(t, float32(0.75), scale)
	}
}

func TestI2SHandBuilt(t *testing.T) {
	// One block: every byte 0x55 (codes 1,1,1,1 = all zeros) except byte 0 = 0b10_01_00_10:
	// element 0 (shift 6) code 2 = +1, element 32 (shift 4) code 1 = 0, element 64 (shift 2)
	// code 0 = -1, element 96 (shift 0) code 2 = +1; byte 31 = 0b00_10_01_00: element 31 = -1,
	// element 63 = +1, element 95 = 0, element 127 = -1.
	data := bytes.Repeat([]byte{0x55}, 32)
	data[0] = 0b10_01_00_10
	data[31] = 0b00_10_01_00
	scale := make([]byte, 32)
	binary.LittleEndian.PutUint32(scale, math.Float32bits(2.5))
	data = append(data, scale...)

	want := make([]int8, 128)
	want[0], want[32], want[64], want[96] = 1, 0, -1, 1
	want[31], want[63], want[95], want[127] = -1, 1, 0, -1
	got, s, err := DecodeI2S(data, 128)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Equal(t, float32(2.5), s)

	enc, err := EncodeI2S(want, 2.5)
	require.NoError(t, err)
	require.Equal(t, data, enc)
}

func TestI2SErrors(t *testing.T) {
	_, err := EncodeI2S(make([]int8, 100), 1)
	require.ErrorContains(t, err, "multiple of 128")
	_, err = EncodeI2S(nil, 1)
	require.Error(t, err)
	bad := make([]int8, 128)
	bad[7] = 2
	_, err = EncodeI2S(bad, 1)
	require.ErrorContains(t, err, "element 7 is 2")
	_, _, err = DecodeI2S(make([]byte, 64), 129)
	require.ErrorContains(t, err, "multiple of 128")
	_, _, err = DecodeI2S(make([]byte, 35), 128)
	require.ErrorContains(t, err, "needs 36 bytes (packed trits and the f32 scale), got 35")
}

func TestTQ2_0RoundTrip(t *testing.T) {
	trits := randTrits(7, 768)
	scales := []float32{1, -0.5, 0.125}
	data, err := EncodeTQ2_0(trits, scales)
	require.NoError(t, err)
	require.Len(t, data, 3*66)
	got, gotScales, err := DecodeTQ2_0(data, 768)
	require.NoError(t, err)
	require.Equal(t, trits, got)
	require.Equal(t, scales, gotScales) // powers of two are exact in f16
}

func TestTQ2_0HandBuilt(t *testing.T) {
	// qs all 0x55 (every 2-bit field code 1 = 0), d = 0x3800 (0.5), except:
	// qs[0] = 0b00_01_10_00: l=0 element 0 code 0 = -1, l=1 element 32 code 2 = +1,
	//   l=2 element 64 code 1 = 0, l=3 element 96 code 0 = -1;
	// qs[37] (chunk 1, m = 5) = 0b10_01_01_01: element 128 + 3*32 + 5 = 229 is +1.
	blk := bytes.Repeat([]byte{0x55}, 64)
	blk[0] = 0b00_01_10_00
	blk[37] = 0b10_01_01_01
	blk = append(blk, 0x00, 0x38)

	want := make([]int8, 256)
	want[0], want[32], want[64], want[96] = -1, 1, 0, -1
	want[229] = 1
	got, scales, err := DecodeTQ2_0(blk, 256)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Equal(t, []float32{0.5}, scales)

	enc, err := EncodeTQ2_0(want, []float32{0.5})
	require.NoError(t, err)
	require.Equal(t, blk, enc)
}

func TestTQ2_0Errors(t *testing.T) {
	_, err := EncodeTQ2_0(make([]int8, 128), []float32{1})
	require.ErrorContains(t, err, "multiple of 256")
	_, err = EncodeTQ2_0(make([]int8, 512), []float32{1})
	require.ErrorContains(t, err, "needs 2 block scales, got 1")
	_, _, err = DecodeTQ2_0(make([]byte, 131), 512)
	require.ErrorContains(t, err, "needs 132 bytes, got 131")
	_, _, err = DecodeTQ2_0(make([]byte, 66), 0)
	require.Error(t, err)
}

func TestTQ1_0PackAllValues(t *testing.T) {
	// Every one of the 3^5 digit strings must survive pack then unpack, and so must every
	// 4-digit qh string (its fifth digit is the 0 the encoder appends).
	for v := 0; v < 243; v++ {
		d := [5]int8{}
		x := v
		for k := 4; k >= 0; k-- {
			d[k] = int8(x%3) - 1
			x /= 3
		}
		b := TQ1Pack(d[:]...)
		for k := 0; k < 5; k++ {
			require.Equal(t, d[k], TQ1Trit(b, k), "v=%d digit %d byte %d", v, k, b)
		}
		if v%3 == 0 {
			b4 := TQ1Pack(d[:4]...)
			require.Equal(t, b, b4)
		}
	}
}

func TestTQ1_0HandBuilt(t *testing.T) {
	// Byte values, computed by hand from ceil(v*256/243):
	//   digits (1,1,1,1,1) -> v = 121 -> 128   (all zeros, qs)
	//   digits (1,1,1,1)+0 -> v = 120 -> 127   (all zeros, qh)
	//   digits (0,1,2,0,1) -> v = 46  -> 49    trits -1, 0, +1, -1, 0
	//   digits (2,0,1,2)+0 -> v = 177 -> 187   trits +1, -1, 0, +1
	//   digits (2,2,2,2,2) -> v = 242 -> 255   trits +1 x5
	// Decoding 49, trit 2: 49*9 = 441 wraps to 185, 185*3 >> 8 = 2 -> +1. Without the 8-bit wrap
	// it would be 441*3 >> 8 = 5, the classic bug.
	blk := make([]byte, 54)
	for i := 0; i < 48; i++ {
		blk[i] = 128
	}
	for i := 48; i < 52; i++ {
		blk[i] = 127
	}
	blk[3] = 49                                     // elements 3, 35, 67, 99, 131
	blk[32+2] = 255                                 // elements 162, 178, 194, 210, 226
	blk[48+1] = 187                                 // elements 241, 245, 249, 253
	binary.LittleEndian.PutUint16(blk[52:], 0xC000) // d = -2

	want := make([]int8, 256)
	want[3], want[35], want[67], want[99], want[131] = -1, 0, 1, -1, 0
	want[162], want[178], want[194], want[210], want[226] = 1, 1, 1, 1, 1
	want[241], want[245], want[249], want[253] = 1, -1, 0, 1
	got, scales, err := DecodeTQ1_0(blk, 256)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Equal(t, []float32{-2}, scales)

	enc, err := EncodeTQ1_0(want, []float32{-2})
	require.NoError(t, err)
	require.Equal(t, blk, enc)
}

func TestTQ1_0RoundTrip(t *testing.T) {
	trits := randTrits(11, 512)
	scales := []float32{0.25, 3}
	data, err := EncodeTQ1_0(trits, scales)
	require.NoError(t, err)
	require.Len(t, data, 2*54)
	got, gotScales, err := DecodeTQ1_0(data, 512)
	require.NoError(t, err)
	require.Equal(t, trits, got)
	require.Equal(t, scales, gotScales)
}

func TestTQ1_0Errors(t *testing.T) {
	_, err := EncodeTQ1_0(make([]int8, 300), []float32{1})
	require.ErrorContains(t, err, "multiple of 256")
	_, err = EncodeTQ1_0(make([]int8, 256), nil)
	require.ErrorContains(t, err, "needs 1 block scales, got 0")
	bad := make([]int8, 256)
	bad[255] = -2
	_, err = EncodeTQ1_0(bad, []float32{1})
	require.ErrorContains(t, err, "element 255 is -2")
	_, _, err = DecodeTQ1_0(make([]byte, 53), 256)
	require.ErrorContains(t, err, "needs 54 bytes, got 53")
}

func TestQuantizeAbsmean(t *testing.T) {
	// mean|w| = (0.5+1+1.5+2.5+0+0.5)/6 = 1. w/1 = -0.5, 1, 1.5, -2.5, 0, -0.5
	// roundEven: -0 (tie to even), 1, 2 -> clamp 1, -2 -> clamp -1, 0, -0.
	trits, scale := QuantizeAbsmean([]float32{-0.5, 1, 1.5, -2.5, 0, -0.5})
	require.Equal(t, float32(1), scale)
	require.Equal(t, []int8{0, 1, 1, -1, 0, 0}, trits)

	// mean|w| = 0.4; w/0.4 = 0.5 -> 0 (tie to even), 1.5 -> 2 -> 1 (tie to even, then clamp).
	trits, scale = QuantizeAbsmean([]float32{0.2, 0.6})
	require.InDelta(t, 0.4, scale, 1e-7)
	require.Equal(t, []int8{0, 1}, trits)

	// All zeros: scale 0, the 1e-5 floor avoids a division by zero.
	trits, scale = QuantizeAbsmean(make([]float32, 4))
	require.Equal(t, float32(0), scale)
	require.Equal(t, make([]int8, 4), trits)
}

func TestTernaryMatrixRows(t *testing.T) {
	// 3 rows x 256 cols; the same trits in all three encodings give the same rows.
	const rows, cols = 3, 256
	trits := randTrits(3, rows*cols)
	i2s, err := EncodeI2S(trits, 0.5)
	require.NoError(t, err)
	tq2, err := EncodeTQ2_0(trits, []float32{1, 2, 4})
	require.NoError(t, err)
	tq1, err := EncodeTQ1_0(trits, []float32{1, 2, 4})
	require.NoError(t, err)

	cases := []struct {
		typ    TensorType
		data   []byte
		scales [][]float32
	}{
		{TypeI2_S, i2s, [][]float32{{0.5}, {0.5}, {0.5}}},
		{TypeTQ2_0, tq2, [][]float32{{1}, {2}, {4}}},
		{TypeTQ1_0, tq1, [][]float32{{1}, {2}, {4}}},
	}
	for _, c := range cases {
		m, err := NewTernaryMatrix(&Tensor{Name: "w", Type: c.typ, Shape: []uint64{cols, rows}, Data: c.data})
		require.NoError(t, err)
		require.Equal(t, 1, m.Groups())
		row := make([]int8, cols)
		sc := make([]float32, 1)
		for r := 0; r < rows; r++ {
			require.NoError(t, m.Row(r, row, sc))
			require.Equal(t, trits[r*cols:(r+1)*cols], row, "type %d row %d", c.typ, r)
			require.Equal(t, c.scales[r], sc)
		}
		require.ErrorContains(t, m.Row(3, row, sc), "row 3 out of range")
		require.ErrorContains(t, m.Row(0, row[:5], sc), "destination 5")
	}
}

func TestTernaryMatrixI2SUnalignedRows(t *testing.T) {
	// 4 rows x 96 cols = 384 elements (3 I2_S blocks); rows straddle block boundaries.
	trits := randTrits(5, 384)
	data, err := EncodeI2S(trits, 1)
	require.NoError(t, err)
	m, err := NewTernaryMatrix(&Tensor{Name: "w", Type: TypeI2_S, Shape: []uint64{96, 4}, Data: data})
	require.NoError(t, err)
	row := make([]int8, 96)
	for r := 0; r < 4; r++ {
		require.NoError(t, m.Row(r, row, make([]float32, 1)))
		require.Equal(t, trits[r*96:(r+1)*96], row)
	}
}

func TestNewTernaryMatrixErrors(t *testing.T) {
	_, err := NewTernaryMatrix(&Tensor{Name: "blk.0.attn_q.weight", Type: TypeF16, Shape: []uint64{256, 2}, Data: make([]byte, 1024)})
	require.ErrorContains(t, err, "blk.0.attn_q.weight")
	require.ErrorContains(t, err, "want a ternary type")
	_, err = NewTernaryMatrix(&Tensor{Name: "w", Type: TypeTQ2_0, Shape: []uint64{128, 2}, Data: make([]byte, 66)})
	require.ErrorContains(t, err, "cols a multiple of 256")
	_, err = NewTernaryMatrix(&Tensor{Name: "w", Type: TypeTQ1_0, Shape: []uint64{256, 2}, Data: make([]byte, 107)})
	require.ErrorContains(t, err, "needs 108 bytes, found 107")
	_, err = NewTernaryMatrix(&Tensor{Name: "w", Type: TypeI2_S, Shape: []uint64{128, 1}, Data: make([]byte, 33)})
	require.ErrorContains(t, err, "needs 36 bytes (packed trits and the f32 scale), found 33")
	_, err = NewTernaryMatrix(&Tensor{Name: "w", Type: TypeI2_S, Shape: []uint64{128}, Data: make([]byte, 64)})
	require.ErrorContains(t, err, "2-D")
}
