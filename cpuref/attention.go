package cpuref

import (
	"fmt"
	"math"
)

// AttentionChunk is the number of consecutive key positions Attention folds at a time: chunk c
// holds positions AttentionChunk*c .. AttentionChunk*c+AttentionChunk-1. The GPU kernels use it as
// their key tile (shaders/attention.comp), so it is part of the canonical arithmetic.
const AttentionChunk = 32

// attnNoScore is the running maximum before the first chunk and the start of every chunk maximum:
// below every finite score that occurs (shaders/attention.comp's NEG).
const attnNoScore = float32(-3.0e38)

// Attention computes causal multi-head attention with grouped-query KV heads for one query token
// at position pos (Vaswani et al. 2017; GQA, Ainslie et al. 2023), in the canonical order that the
// GPU kernels reproduce bit for bit. q is [heads][headDim]; kCache and vCache hold f16 bits laid
// out [ctx][kvHeads][headDim] (ctx >= pos+1), of which positions 0..pos are read; dst is
// [heads][headDim]. Query head h reads KV head g = h / (heads/kvHeads).
//
// For each head, with scale = float32(1/sqrt(headDim)) (computed in float64, rounded once), k_j and
// v_j the f16 rows of position j converted exactly to f32, and every operation below a single
// correctly rounded f32 operation (no fused multiply-add):
//
//  1. Score s_j = dot(q, k_j) * scale for j = 0..pos. The dot product keeps 8 partial sums:
//     a_r = Σ q_i*k_j,i over i ≡ r (mod 8), i ascending, each product rounded, then added to a
//     sum that starts at +0; then a_r += a_(r+4) for r < 4, a_r += a_(r+2) for r < 2, and
//     a_0 + a_1 (TreeSum of the 8 partials).
//  2. The keys 0..pos are cut into chunks of AttentionChunk positions aligned at 0 (the last one
//     possibly partial). For each chunk c: m_c = max(-3e38, max_j s_j) (exact);
//     p_j = SoftmaxExp(s_j - m_c); l_c = Σ_j p_j and o_c[d] = Σ_j p_j*v_j,d, both sequential over
//     j ascending from +0.
//  3. The chunks are folded in order from M = -3e38, L = 0, O = 0 (online softmax, Milakov and
//     Gimelshein 2018): M' = max(M, m_c), a = SoftmaxExp(M - M'), b = SoftmaxExp(m_c - M'),
//     L = (L*a) + (l_c*b), O[d] = (O[d]*a) + (o_c[d]*b), M = M'. For the first chunk a is 0 and b
//     is 1, so the fold just takes the chunk's partial.
//  4. dst[d] = O[d] * Rcp32(L). L >= 1: the key holding the maximum contributes e^0 = 1.
//
// Keys after pos are not part of any sum. Because the fold runs in chunk order on partials that
// depend only on their own chunk, the result is the same whether the chunks are streamed by one
// workgroup (FlashAttention, Dao et al. 2022; Dao 2023) or computed in parallel and merged
// afterwards (flash-decoding, Dao et al. 2023). Weights below e^-40 of the running maximum are
// dropped (SoftmaxExp), which changes the output by less than n*1e-17 of the largest |v| for n
// keys. Scores are assumed finite and above -3e38 (q and the caches finite); other inputs give
// unspecified results. Source: the README's Numerics section.
//
// It returns an error for inconsistent shapes, heads not a multiple of kvHeads, or a cache shorter
// than pos+1 rows.
func Attention(dst, q []float32, kCache, vCache []uint16, pos, heads, kvHeads, headDim int) error {
	if heads <= 0 || kvHeads <= 0 || headDim <= 0 || heads%kvHeads != 0 {
		return fmt.Errorf("cpuref: Attention: heads %d must be a positive multiple of kvHeads %d (headDim %d)", heads, kvHeads, headDim)
	}
	if len(q) != heads*headDim || len(dst) != heads*headDim {
		return fmt.Errorf("cpuref: Attention: q %d and dst %d elements, want heads %d * headDim %d", len(q), len(dst), heads, headDim)
	}
	kvDim := kvHeads * headDim
	if pos < 0 || len(kCache) < (pos+1)*kvDim || len(vCache) < (pos+1)*kvDim {
		return fmt.Errorf("cpuref: Attention: caches of %d and %d elements do not hold positions 0..%d of %d elements", len(kCache), len(vCache), pos, kvDim)
	}
	group := heads / kvHeads
	scale := float32(1 / math.Sqrt(float64(headDim)))
	s := make([]float32, AttentionChunk) // scores, then weights, of one chunk
	oc := make([]float32, headDim)       // o_c
	for h := range heads {
		qh := q[h*headDim : (h+1)*headDim]
		off := (h / group) * headDim
		out := dst[h*headDim : (h+1)*headDim] // O until the final scaling
		clear(out)
		M, L := attnNoScore, float32(0)
		for c0 := 0; c0 <= pos; c0 += AttentionChunk {
			n := min(AttentionChunk, pos+1-c0)
			m := attnNoScore
			for j := range n {
				row := (c0+j)*kvDim + off
				s[j] = float32(attnDot(qh, kCache[row:row+headDim]) * scale)
				m = max(m, s[j])
			}
			var l float32
			clear(oc)
			for j := range n {
				p := SoftmaxExp(float32(s[j] - m))
				l = float32(l + p)
				row := (c0+j)*kvDim + off
				for d, vb := range vCache[row : row+headDim] {
					oc[d] = float32(oc[d] + float32(p*f16[vb]))
				}
			}
			mNew := max(M, m)
			a := SoftmaxExp(float32(M - mNew))
			b := SoftmaxExp(float32(m - mNew))
			L = float32(float32(L*a) + float32(l*b))
			for d := range out {
				out[d] = float32(float32(out[d]*a) + float32(oc[d]*b))
			}
			M = mNew
		}
		r := Rcp32(L)
		for d := range out {
			out[d] = float32(out[d] * r)
		}
	}
	return nil
}

// attnDot is the canonical dot product of q with the f16 row k (Attention's step 1): eight
// strided partial sums, each sequential from +0, reduced by TreeSum.
func attnDot(q []float32, k []uint16) float32 {
	var a [8]float32
	for i, qv := range q {
		a[i%8] = float32(a[i%8] + float32(qv*f16[k[i]]))
	}
	return TreeSum(a[:])
}
