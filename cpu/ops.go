package cpu

import (
	"encoding/binary"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// f16 maps every f16 bit pattern to its float32 value (model.F16ToF32, exact), for the KV cache
// and the F16 logits matrix.
var f16 = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = model.F16ToF32(uint16(i))
	}
	return &t
}()

// attentionHead computes one query head of cpuref.Attention for a token at position pos: q and
// out are that head's [headDim] slices, off the KV head's offset within a cache row of kvDim
// values; s (AttentionChunk) and oc (headDim) are scratch. The arithmetic is cpuref's, step for
// step (canonical 8-lane q·k, 32-key chunks folded in order, SoftmaxExp, Rcp32), so splitting
// heads across workers gives the same bits.
func attentionHead(out, q []float32, kCache, vCache []uint16, pos, off, kvDim int, scale float32, s, oc []float32) {
	headDim := len(q)
	clear(out)
	M, L := float32(-3.0e38), float32(0)
	for c0 := 0; c0 <= pos; c0 += cpuref.AttentionChunk {
		n := min(cpuref.AttentionChunk, pos+1-c0)
		m := float32(-3.0e38)
		for j := range n {
			row := (c0+j)*kvDim + off
			s[j] = float32(attnDot(q, kCache[row:row+headDim]) * scale)
			m = max(m, s[j])
		}
		var l float32
		clear(oc)
		for j := range n {
			p := cpuref.SoftmaxExp(float32(s[j] - m))
			l = float32(l + p)
			row := (c0+j)*kvDim + off
			vr := vCache[row : row+headDim]
			oc := oc[:len(vr)]
			for d, vb := range vr {
				oc[d] = float32(oc[d] + float32(p*f16[vb]))
			}
		}
		mNew := max(M, m)
		a := cpuref.SoftmaxExp(float32(M - mNew))
		b := cpuref.SoftmaxExp(float32(m - mNew))
		L = float32(float32(L*a) + float32(l*b))
		for d := range out {
			out[d] = float32(float32(out[d]*a) + float32(oc[d]*b))
		}
		M = mNew
	}
	r := cpuref.Rcp32(L)
	for d := range out {
		out[d] = float32(out[d] * r)
	}
}

// attnDot is cpuref's canonical attention dot product: eight strided partials, each sequential
// from +0, then TreeSum's order (a_r += a_(r+4), a_r += a_(r+2), a_0 + a_1).
func attnDot(q []float32, k []uint16) float32 {
	var a [8]float32
	i := 0
	for ; i+8 <= len(q); i += 8 {
		kk := k[i : i+8 : i+8]
		qq := q[i : i+8 : i+8]
		for r := range 8 {
			a[r] = float32(a[r] + float32(qq[r]*f16[kk[r]]))
		}
	}
	for ; i < len(q); i++ {
		a[i%8] = float32(a[i%8] + float32(q[i]*f16[k[i]]))
	}
	return cpuref.TreeSum(a[:])
}

// logitF16 is cpuref.Logits' canonical dot product of x with one F16 row (raw: 2*len(x) bytes,
// little-endian): pairs (2k, 2k+1) rounded as x[2k]*e[2k] + x[2k+1]*e[2k+1], pair k added to
// lane k mod LogitLanes in order, the lanes reduced by TreeSum.
func logitF16(x []float32, raw []byte) float32 {
	var p [cpuref.LogitLanes]float32
	dim := len(x)
	raw = raw[:2*dim]
	const lanes = cpuref.LogitLanes
	k := 0
	for ; 2*(k+lanes) <= dim; k += lanes {
		xs := x[2*k : 2*(k+lanes)]
		rs := raw[4*k : 4*(k+lanes)]
		for l := range lanes {
			e0 := f16[binary.LittleEndian.Uint16(rs[4*l:])]
			e1 := f16[binary.LittleEndian.Uint16(rs[4*l+2:])]
			p[l] = float32(p[l] + float32(float32(xs[2*l]*e0)+float32(xs[2*l+1]*e1)))
		}
	}
	for ; 2*k < dim; k++ {
		j := 2 * k
		pair := float32(x[j] * f16[binary.LittleEndian.Uint16(raw[2*j:])])
		if j+1 < dim {
			pair = float32(pair + float32(x[j+1]*f16[binary.LittleEndian.Uint16(raw[2*j+2:])]))
		}
		p[k%lanes] = float32(p[k%lanes] + pair)
	}
	return cpuref.TreeSum(p[:])
}
