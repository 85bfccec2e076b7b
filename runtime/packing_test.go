package runtime

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// TestBase3ByteCodec: all 243 five-trit combinations encode (ggml's TQ1_0 formula) to distinct
// bytes that decode back digit for digit — checked against an independent integer form of the
// fixed-point digit, floor(3·frac(byte·3^n/256)) — and the encoding is monotone (byte order =
// q order). The GPU's two-bytes-a-half decode (shaders/ternary_matmul.comp, addBase3) is checked
// too: on every pair of bytes, m·3 >> 8 in a 16-bit half gives the same digit as the byte alone,
// with no carry into the other half.
func TestBase3ByteCodec(t *testing.T) {
	seen := map[byte]bool{}
	prev := -1
	for q := 0; q < 243; q++ {
		var c [5]uint8
		for n, v := 4, q; n >= 0; n-- {
			c[n] = uint8(v % 3)
			v /= 3
		}
		b := model.TQ1Pack(int8(c[0])-1, int8(c[1])-1, int8(c[2])-1, int8(c[3])-1, int8(c[4])-1)
		require.False(t, seen[b], "q %d: byte %d twice", q, b)
		seen[b] = true
		require.Greater(t, int(b), prev, "q %d: not monotone", q)
		prev = int(b)
		for n := 0; n < 5; n++ {
			require.Equal(t, c[n], uint8(model.TQ1Trit(b, n)+1), "q %d digit %d", q, n)
			p := 1
			for range n {
				p *= 3
			}
			frac := (int(b) * p) % 256 // frac(b·3^n/256)·256
			require.Equal(t, c[n], uint8(3*frac/256), "q %d digit %d (fixed point)", q, n)
		}
	}
	require.Len(t, seen, 243)
	// The shader's SWAR decode of trit n of bytes b0..b3 in one word.
	swar := func(x uint32, n int) uint32 {
		lo, hi := x&0x00ff00ff, (x>>8)&0x00ff00ff
		for range n {
			lo, hi = (lo*3)&0x00ff00ff, (hi*3)&0x00ff00ff
		}
		return (lo*3>>8)&0x00030003 | ((hi*3>>8)&0x00030003)<<8
	}
	for x := uint32(0); x < 1<<16; x++ { // every pair of bytes, in both positions of a word
		for _, w := range []uint32{x | x<<16, x<<8 | 0x13, x ^ 0xa5a5a5a5, x<<16 | 0xffff} {
			for n := 0; n < 5; n++ {
				want := uint32(0)
				for k := 0; k < 4; k++ {
					want |= uint32(model.TQ1Trit(byte(w>>(8*k)), n)+1) << (8 * k)
				}
				if got := swar(w, n); got != want {
					t.Fatalf("word %#08x trit %d: swar %#08x, bytewise %#08x", w, n, got, want)
				}
			}
		}
	}
}

// TestParseTernaryPacking: the flag's values, "" as auto, and an error naming the flag.
func TestParseTernaryPacking(t *testing.T) {
	for in, want := range map[string]TernaryPacking{"": PackingAuto, "auto": PackingAuto, "2bit": Packing2Bit, "base3": PackingBase3} {
		got, err := ParseTernaryPacking(in)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := ParseTernaryPacking("tq1_0")
	require.EqualError(t, err, `--ternary-packing "tq1_0": want auto, 2bit or base3`)
}

// TestProjectionBytes: the exact device bytes of the projections per layout — the 2B4T shapes
// (521,011,200 bytes 2-bit, the 521 MB; 423,321,600 base-3, −18.75 %) and the built-in
// model's (dim 256, FFN 768, 4 layers: 786,432 and 638,976) — and the 2-bit count equals
// DecodeBytesOf's projection bytes; a matrix whose columns are not whole 256-blocks stays 2-bit.
func TestProjectionBytes(t *testing.T) {
	b2, err := model.SynthPreset("2b4t")
	require.NoError(t, err)
	c2 := model.Config{Dim: b2.Dim, Layers: b2.Layers, Heads: b2.Heads, KVHeads: b2.KVHeads, HeadDim: b2.Dim / b2.Heads, FFNDim: b2.FFN}
	require.EqualValues(t, 521_011_200, ProjectionBytes(c2, Packing2Bit))
	require.EqualValues(t, 423_321_600, ProjectionBytes(c2, PackingBase3))
	tiny := model.Config{Dim: 256, Layers: 4, Heads: 4, KVHeads: 2, HeadDim: 64, FFNDim: 768}
	require.EqualValues(t, 786_432, ProjectionBytes(tiny, Packing2Bit))
	require.EqualValues(t, 638_976, ProjectionBytes(tiny, PackingBase3))
	require.EqualValues(t, 147_456, packingSavings(tiny, false, PackingBase3))
	require.Zero(t, packingSavings(tiny, true, PackingBase3))
	require.Zero(t, packingSavings(tiny, false, Packing2Bit))
	for _, c := range []model.Config{c2, tiny} {
		require.Equal(t, DecodeBytesOf(c, false, "f16").Weights-ProjectionBytes(c, Packing2Bit),
			DecodeBytesOf(c, true, "f16").Weights-2*4*ProjectionBytes(c, Packing2Bit), "norms and output norm")
	}
	require.EqualValues(t, 40*320/4, TernaryMatrixBytes(40, 320, PackingBase3), "320 columns stay 2-bit")
	require.EqualValues(t, 40*512/256*52, TernaryMatrixBytes(40, 512, PackingBase3))
}
