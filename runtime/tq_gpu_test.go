//go:build cgo

package runtime

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
)

// The TQ blocks below are built byte by byte from known trits, following the format as the
// design notes (§3) and llama.cpp's ggml-quants state it, without model/ternary.go's codecs:
// the GPU's result is then compared with an integer dot product of the same known trits, so a
// decoder bug shared by both backends (which the CPU-vs-GPU tests cannot see) shows here.

// tqScaleF16 is the block scale d of the hand-built blocks: 0.25 as IEEE half (0x3400), so every
// output float32(acc)*0.25 is exact.
const (
	tqScaleF16 = 0x3400
	tqScale    = 0.25
)

// handTQ2_0 encodes trits (a multiple of 256) as TQ2_0 blocks: 64 bytes qs, then d; for each
// 32-byte chunk c and shift l, bits 2l..2l+1 of byte m hold trit+1 of element 128c + 32l + m.
func handTQ2_0(trits []int8) []byte {
	var out []byte
	for b := 0; b < len(trits); b += 256 {
		blk := make([]byte, 66)
		for c := 0; c < 2; c++ {
			for l := 0; l < 4; l++ {
				for m := 0; m < 32; m++ {
					blk[32*c+m] |= byte(trits[b+128*c+32*l+m]+1) << (2 * l)
				}
			}
		}
		binary.LittleEndian.PutUint16(blk[64:], tqScaleF16)
		out = append(out, blk...)
	}
	return out
}

// tq1Byte packs five base-3 digits (trit+1, the first most significant) as ggml does:
// q = Σ digit·3^(4-n), stored as ceil(q·256/243).
func tq1Byte(digits [5]int8) byte {
	q := 0
	for _, t := range digits {
		q = 3*q + int(t+1)
	}
	return byte((q*256 + 242) / 243)
}

// tq1Digit is the spec's reading of trit n of byte b: ((uint8(b·3^n))·3) >> 8, minus 1.
func tq1Digit(b byte, n int) int8 {
	p := byte(1)
	for i := 0; i < n; i++ {
		p *= 3
	}
	return int8((int(b*p)*3)>>8) - 1
}

// handTQ1_0 encodes trits (a multiple of 256) as TQ1_0 blocks: 48 bytes qs, 4 bytes qh, then d.
// qs[m] (m < 32) holds elements n·32 + m (n = 0..4); qs[32+m] (m < 16) elements 160 + n·16 + m;
// qh[j] elements 240 + n·4 + j for n = 0..3, its fifth digit 0 (code 0, as ggml's `q *= 3`).
func handTQ1_0(trits []int8) []byte {
	var out []byte
	for b := 0; b < len(trits); b += 256 {
		x := trits[b : b+256]
		blk := make([]byte, 54)
		for m := 0; m < 32; m++ {
			blk[m] = tq1Byte([5]int8{x[m], x[32+m], x[64+m], x[96+m], x[128+m]})
		}
		for m := 0; m < 16; m++ {
			blk[32+m] = tq1Byte([5]int8{x[160+m], x[176+m], x[192+m], x[208+m], x[224+m]})
		}
		for j := 0; j < 4; j++ {
			blk[48+j] = tq1Byte([5]int8{x[240+j], x[244+j], x[248+j], x[252+j], -1})
		}
		binary.LittleEndian.PutUint16(blk[52:], tqScaleF16)
		out = append(out, blk...)
	}
	return out
}

// TestHandBuiltTQ1_0Bytes checks the test's own TQ1_0 encoder against the spec's reading rule
// (with the 8-bit wrap) for every combination of five trits, so the GPU test below rests on
// bytes that follow the format, not on model's encoder.
func TestHandBuiltTQ1_0Bytes(t *testing.T) {
	for v := 0; v < 243; v++ {
		var d [5]int8
		for n, x := 4, v; n >= 0; n, x = n-1, x/3 {
			d[n] = int8(x%3) - 1
		}
		b := tq1Byte(d)
		for n := 0; n < 5; n++ {
			require.Equal(t, d[n], tq1Digit(b, n), "digits %v byte %d trit %d", d, b, n)
		}
	}
}

// TestGPUTernaryMatMulHandBuiltTQ runs the GPU ternary matmul — loaded exactly as NewGPU loads
// a projection (model.NewTernaryMatrix, RepackTernary) — on hand-built TQ1_0 and TQ2_0 tensors
// and requires every output to equal float32(Σ trit·q)·d, the integer dot product of the known
// trits with the int8 activations (1/s = 1, d = 0.25: no rounding anywhere).
func TestGPUTernaryMatMulHandBuiltTQ(t *testing.T) {
	d, ks := newKernels(t)
	const rows, cols = 37, 512
	rng := rand.New(rand.NewPCG(15, 6))
	trits := make([]int8, rows*cols)
	for i := range trits {
		trits[i] = int8(rng.IntN(3) - 1)
	}
	for i := 0; i < cols; i++ { // a row of +1s and a row of -1s: the extremes of every position
		trits[i], trits[cols+i] = 1, -1
	}
	for _, c := range []struct {
		typ  model.TensorType
		data []byte
	}{{model.TypeTQ1_0, handTQ1_0(trits)}, {model.TypeTQ2_0, handTQ2_0(trits)}} {
		t.Run(c.typ.String(), func(t *testing.T) {
			m, err := model.NewTernaryMatrix(&model.Tensor{Name: "w", Type: c.typ, Shape: []uint64{cols, rows}, Data: c.data})
			require.NoError(t, err)
			words, scale, err := RepackTernary(m)
			require.NoError(t, err)
			require.Equal(t, float32(tqScale), scale)
			w := &TernaryWeights{Name: "w", Rows: rows, Cols: cols, Scale: scale, Buf: newBuf(t, d, words).Whole()}
			for _, T := range []int{1, 9} {
				q := make([]int8, T*cols)
				sq := make([]uint32, 2*T)
				for tok := 0; tok < T; tok++ {
					var sum int32
					for i := range cols {
						v := int8(rng.IntN(256) - 128)
						if tok == 0 && i < 2 {
							v = [2]int8{-128, 127}[i]
						}
						q[tok*cols+i] = v
						sum += int32(v)
					}
					sq[2*tok], sq[2*tok+1] = math.Float32bits(1), uint32(sum)
				}
				y := zeroBuf(t, d, 4*T*rows)
				require.NoError(t, d.Run(func(s *gpu.Sequence) error {
					return ks.TernaryMatMul(s, w, newBuf(t, d, PackInt8(q)).Whole(), newBuf(t, d, sq).Whole(), y.Whole(), MatMulArgs{T: uint32(T), YStride: rows})
				}))
				got := readF32(t, y, T*rows)
				for tok := 0; tok < T; tok++ {
					for r := 0; r < rows; r++ {
						acc := 0
						for i := 0; i < cols; i++ {
							acc += int(trits[r*cols+i]) * int(q[tok*cols+i])
						}
						want := float32(acc) * tqScale
						require.Equal(t, want, got[tok*rows+r], fmt.Sprintf("%s T=%d token %d row %d", c.typ, T, tok, r))
					}
				}
			}
		})
	}
}
