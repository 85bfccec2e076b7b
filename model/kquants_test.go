package model

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

// The blocks below are packed by hand from the block layouts of ggml-common.h (block_q4_K,
// block_q6_K) and the packing of ggml's quantizers (quantize_row_q4_K_ref, quantize_row_q6_K_ref),
// and the expected values computed per element from that layout in float64 (d, dmin and the
// 6-bit/8-bit scales chosen so every value is exact), independently of the decoders.

// handQ4K packs one Q4_K block: d, dmin (f16 bits), 6-bit scales sc[8] and mins m[8], and 256
// 4-bit values v (element 64k+l in the low nibble of qs[32k+l], element 64k+32+l in its high
// nibble).
func handQ4K(d, dmin uint16, sc, m [8]uint8, v []uint8) []byte {
	b := make([]byte, Q4_KBlockBytes)
	binary.LittleEndian.PutUint16(b[0:], d)
	binary.LittleEndian.PutUint16(b[2:], dmin)
	s := b[4:16]
	for j := 0; j < 8; j++ {
		if j < 4 {
			s[j] |= sc[j]
			s[j+4] |= m[j]
		} else {
			s[j+4] = sc[j]&0xF | (m[j]&0xF)<<4
			s[j-4] |= (sc[j] >> 4) << 6
			s[j] |= (m[j] >> 4) << 6
		}
	}
	qs := b[16:]
	for e, x := range v {
		k, hi, l := e/64, (e%64)/32, e%32
		qs[32*k+l] |= x << (4 * hi)
	}
	return b
}

func TestDecodeQ4_KHandBuilt(t *testing.T) {
	sc := [8]uint8{1, 2, 3, 63, 17, 40, 5, 33}
	m := [8]uint8{0, 1, 62, 7, 20, 9, 63, 48}
	v := make([]uint8, 256)
	for e := range v {
		v[e] = uint8((e*7 + e/16) % 16)
	}
	v[0], v[255] = 15, 15
	const d, dmin = 0.5, 0.25 // f16 0x3800, 0x3400
	blk := handQ4K(0x3800, 0x3400, sc, m, v)
	got := make([]float32, 256)
	require.NoError(t, DecodeQ4_KRow(blk, got))
	for e := range v {
		j := e / 32 // sub-block of 32 elements: scale and min j
		want := d*float64(sc[j])*float64(v[e]) - dmin*float64(m[j])
		require.Equal(t, float32(want), got[e], "element %d", e)
	}
	// Spot values written out: element 0 is 0.5*1*15 - 0; element 255 is 0.5*33*15 - 0.25*48.
	require.Equal(t, float32(7.5), got[0])
	require.Equal(t, float32(235.5), got[255])
	// Two blocks in a row; a short buffer and a bad length are errors.
	two := make([]float32, 512)
	require.NoError(t, DecodeQ4_KRow(append(append([]byte{}, blk...), blk...), two))
	require.Equal(t, got, two[256:])
	require.Error(t, DecodeQ4_KRow(blk[:143], got))
	require.Error(t, DecodeQ4_KRow(blk, got[:128]))
}

// handQ6K packs one Q6_K block from 256 6-bit values L (stored value q+32), 16 int8 scales
// (one per 16 elements) and d (f16 bits), as quantize_row_q6_K_ref lays them out.
func handQ6K(L []uint8, scales [16]int8, d uint16) []byte {
	b := make([]byte, Q6_KBlockBytes)
	ql, qh, sc := b[0:128], b[128:192], b[192:208]
	for j := 0; j < 256; j += 128 {
		for l := 0; l < 32; l++ {
			ql[j/2+l] = L[j+l]&0xF | (L[j+l+64]&0xF)<<4
			ql[j/2+l+32] = L[j+l+32]&0xF | (L[j+l+96]&0xF)<<4
			qh[j/4+l] = L[j+l]>>4 | (L[j+l+32]>>4)<<2 | (L[j+l+64]>>4)<<4 | (L[j+l+96]>>4)<<6
		}
	}
	for i, s := range scales {
		sc[i] = byte(s)
	}
	binary.LittleEndian.PutUint16(b[208:], d)
	return b
}

func TestDecodeQ6_KHandBuilt(t *testing.T) {
	L := make([]uint8, 256)
	for e := range L {
		L[e] = uint8((e*13 + e/64) % 64)
	}
	L[0], L[255] = 0, 63 // q = -32 and +31
	scales := [16]int8{1, -1, 2, -128, 127, 5, -7, 64, 3, -3, 11, 0, -64, 100, 9, -20}
	const d = 0.125 // f16 0x3000
	blk := handQ6K(L, scales, 0x3000)
	got := make([]float32, 256)
	require.NoError(t, DecodeQ6_KRow(blk, got))
	for e := range L {
		want := d * float64(scales[e/16]) * float64(int(L[e])-32)
		require.Equal(t, float32(want), got[e], "element %d", e)
	}
	require.Equal(t, float32(-4), got[0])             // 0.125*1*-32
	require.Equal(t, float32(0.125*-20*31), got[255]) // last scale, q = 31
	require.Error(t, DecodeQ6_KRow(blk[:209], got))
}

// TestKQuantTensors: Q4_K and Q6_K are sized (144 and 210 bytes per 256 elements), read by
// FloatRow, allowed for the embedding and output only, checked for non-finite block scales, and
// re-quantized to Q8_0 or converted to F16 from their decoded values.
func TestKQuantTensors(t *testing.T) {
	n, err := TensorBytes(TypeQ4_K, []uint64{512, 3})
	require.NoError(t, err)
	require.Equal(t, uint64(6*144), n)
	n, err = TensorBytes(TypeQ6_K, []uint64{256, 2})
	require.NoError(t, err)
	require.Equal(t, uint64(2*210), n)
	_, err = TensorBytes(TypeQ4_K, []uint64{128, 2})
	require.Error(t, err)
	require.True(t, kindAllows(KindEmbedding, TypeQ4_K) && kindAllows(KindEmbedding, TypeQ6_K))
	require.False(t, kindAllows(KindNorm, TypeQ4_K))

	L := make([]uint8, 256)
	for e := range L {
		L[e] = uint8(e % 64)
	}
	var scales [16]int8
	for i := range scales {
		scales[i] = int8(3*i - 20)
	}
	row0, row1 := handQ6K(L, scales, 0x2E66), handQ6K(L, scales, 0x3000) // d = 0.1 (rounded), 0.125
	tt := &Tensor{Name: "output.weight", Type: TypeQ6_K, Shape: []uint64{256, 2}, Data: append(append([]byte{}, row0...), row1...)}
	want := make([]float32, 256)
	require.NoError(t, DecodeQ6_KRow(row1, want))
	got := make([]float32, 256)
	require.NoError(t, FloatRow(tt, 1, got))
	require.Equal(t, want, got)

	q8, err := QuantizeQ8_0Matrix(tt)
	require.NoError(t, err)
	wantQ8, err := EncodeQ8_0(want)
	require.NoError(t, err)
	require.Equal(t, wantQ8, q8.Data[len(q8.Data)/2:])
	f16, err := F16Matrix(tt)
	require.NoError(t, err)
	require.Equal(t, TypeF16, f16.Type)
	require.Equal(t, EncodeF16(want), f16.Data[512:])

	bad := append([]byte{}, tt.Data...)
	binary.LittleEndian.PutUint16(bad[210+208:], 0x7C00) // +Inf d in block 1
	require.ErrorContains(t, checkTensorFinite(&Tensor{Name: "output.weight", Type: TypeQ6_K, Shape: tt.Shape, Data: bad}), "block 1")
	q4 := handQ4K(0x3800, 0x7E00, [8]uint8{}, [8]uint8{}, make([]uint8, 256)) // NaN dmin
	require.ErrorContains(t, checkTensorFinite(&Tensor{Name: "token_embd.weight", Type: TypeQ4_K, Shape: []uint64{256, 1}, Data: q4}), "min scale of block 0")
}
