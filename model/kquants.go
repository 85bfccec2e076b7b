package model

import (
	"encoding/binary"
	"fmt"
)

// K-quant block geometry (ggml-common.h): 256-element super-blocks. llama-quantize writes
// token_embd as Q4_K and output as Q6_K by default when quantizing to TQ1_0/TQ2_0.
//
//	block_q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of 4-bit qs
//	block_q6_K (210 bytes): 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 scales, f16 d
const (
	KBlockElems    = 256
	Q4_KBlockBytes = 144
	Q6_KBlockBytes = 210
)

// q4KScaleMin is ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j (0..7) from the
// 12 packed bytes q. Sub-blocks 0-3 keep theirs in the low 6 bits of q[j] and q[j+4]; sub-blocks
// 4-7 in the nibbles of q[j+4] with the top 2 bits taken from q[j-4] (scale) and q[j] (min).
func q4KScaleMin(j int, q []byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0xF | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

// DecodeQ4_KRow decodes len(dst) Q4_K elements (a multiple of 256) from data into dst, as ggml's
// dequantize_row_q4_K (ggml/src/ggml-quants.c) does: per super-block d = f16 d, min = f16 dmin;
// the 256 elements are 4 groups of 64, group k using sub-blocks 2k and 2k+1 (q4KScaleMin) and
// bytes qs[32k .. 32k+31]: element 64k+l is d1*(qs[32k+l] & 0xF) - m1 and element 64k+32+l is
// d2*(qs[32k+l] >> 4) - m2, with d1 = d*sc(2k), m1 = min*m(2k), d2 = d*sc(2k+1), m2 = min*m(2k+1).
// Every product and difference is rounded to f32 separately (no fused multiply-add), which is
// what both of bitgpu's backends read. It returns an error for a length that is not a multiple
// of 256 or short data.
func DecodeQ4_KRow(data []byte, dst []float32) error {
	nb, err := blockCount("Q4_K", len(dst), KBlockElems, Q4_KBlockBytes, len(data))
	if err != nil {
		return err
	}
	for b := 0; b < nb; b++ {
		blk := data[b*Q4_KBlockBytes : (b+1)*Q4_KBlockBytes]
		d := F16ToF32(binary.LittleEndian.Uint16(blk[0:]))
		dmin := F16ToF32(binary.LittleEndian.Uint16(blk[2:]))
		scales, qs := blk[4:16], blk[16:144]
		y := dst[b*KBlockElems : (b+1)*KBlockElems]
		for k := 0; k < 4; k++ {
			sc1, m1 := q4KScaleMin(2*k, scales)
			sc2, m2 := q4KScaleMin(2*k+1, scales)
			d1, mm1 := float32(d*float32(sc1)), float32(dmin*float32(m1))
			d2, mm2 := float32(d*float32(sc2)), float32(dmin*float32(m2))
			q := qs[32*k : 32*k+32]
			for l := 0; l < 32; l++ {
				y[64*k+l] = float32(d1*float32(q[l]&0xF)) - mm1
				y[64*k+32+l] = float32(d2*float32(q[l]>>4)) - mm2
			}
		}
	}
	return nil
}

// DecodeQ6_KRow decodes len(dst) Q6_K elements (a multiple of 256) from data into dst, as ggml's
// dequantize_row_q6_K (ggml/src/ggml-quants.c) does: per super-block, for each half n (0, 1) of
// 128 elements with ql = ql[64n:], qh = qh[32n:], sc = scales[8n:] and l in 0..31 (is = l/16),
//
//	q1 = (ql[l]    & 0xF | ((qh[l]>>0)&3)<<4) - 32  ->  element 128n+l    = (d*sc[is+0])*q1
//	q2 = (ql[l+32] & 0xF | ((qh[l]>>2)&3)<<4) - 32  ->  element 128n+l+32 = (d*sc[is+2])*q2
//	q3 = (ql[l]    >> 4  | ((qh[l]>>4)&3)<<4) - 32  ->  element 128n+l+64 = (d*sc[is+4])*q3
//	q4 = (ql[l+32] >> 4  | ((qh[l]>>6)&3)<<4) - 32  ->  element 128n+l+96 = (d*sc[is+6])*q4
//
// with d the f16 at the block's end and each product rounded to f32. It returns an error for a
// length that is not a multiple of 256 or short data.
func DecodeQ6_KRow(data []byte, dst []float32) error {
	nb, err := blockCount("Q6_K", len(dst), KBlockElems, Q6_KBlockBytes, len(data))
	if err != nil {
		return err
	}
	for b := 0; b < nb; b++ {
		blk := data[b*Q6_KBlockBytes : (b+1)*Q6_KBlockBytes]
		d := F16ToF32(binary.LittleEndian.Uint16(blk[208:]))
		y := dst[b*KBlockElems : (b+1)*KBlockElems]
		for n := 0; n < 2; n++ {
			ql, qh, sc := blk[64*n:64*n+64], blk[128+32*n:128+32*n+32], blk[192+8*n:192+8*n+8]
			out := y[128*n : 128*n+128]
			for l := 0; l < 32; l++ {
				is := l / 16
				q1 := int32(ql[l]&0xF|(qh[l]>>0&3)<<4) - 32
				q2 := int32(ql[l+32]&0xF|(qh[l]>>2&3)<<4) - 32
				q3 := int32(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int32(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				out[l] = float32(d*float32(int8(sc[is]))) * float32(q1)
				out[l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
				out[l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
				out[l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
			}
		}
	}
	return nil
}

// F16Matrix returns the 2-D float matrix t (GGUF shape [cols, rows]) as an F16 tensor of the same
// name and shape, each element decoded exactly to f32 (FloatRow) and rounded to f16 (nearest
// even). An F16 tensor is returned as it is. It is how both backends run `--lm-head f16` on a
// Q4_K or Q6_K output matrix (llama-quantize's defaults for TQ files): the F16 head's GPU kernel
// reads f16, so the CPU reads the same rounded values. The result is in memory; errors name the
// tensor.
func F16Matrix(t *Tensor) (*Tensor, error) {
	if t == nil {
		return nil, fmt.Errorf("model: F16Matrix: nil tensor")
	}
	if t.Type == TypeF16 {
		return t, nil
	}
	if len(t.Shape) != 2 {
		return nil, fmt.Errorf("model: tensor %s: F16 needs a 2-D matrix, found shape %v", t.Name, t.Shape)
	}
	cols, rows, err := matrixDims(t)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 2*cols*rows)
	row := make([]float32, cols)
	err = CatchFault(func() error {
		for r := 0; r < rows; r++ {
			if err := FloatRow(t, r, row); err != nil {
				return err
			}
			for j, v := range row {
				binary.LittleEndian.PutUint16(out[2*(r*cols+j):], F32ToF16(v))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Tensor{Name: t.Name, Type: TypeF16, Shape: []uint64{uint64(cols), uint64(rows)}, Data: out}, nil
}
