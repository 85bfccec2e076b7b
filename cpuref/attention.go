package cpuref

import (
	"fmt"
	"math"
)

// Attention computes causal multi-head attention with grouped-query KV heads for one query token
// at position pos (Vaswani et al. 2017; GQA, Ainslie et al. 2023). q is [heads][headDim]; kCache
// and vCache hold f16 bits laid out [ctx][kvHeads][headDim] (ctx >= pos+1), of which positions
// 0..pos are read; dst is [heads][headDim]. Query head h reads KV head h / (heads/kvHeads). For
// each head:
//
//	score_t = (q · k_t) * (1/sqrt(headDim))        t = 0..pos (causal: nothing after pos)
//	p_t     = exp(score_t - max_t score_t) / Σ_t exp(score_t - max_t score_t)
//	dst     = Σ_t p_t * v_t
//
// The dot products and sums run in f32 in index order; 1/sqrt(headDim) and exp are computed in
// float64 and rounded to f32. Source: the README's Numerics section. It returns an error for inconsistent
// shapes, heads not a multiple of kvHeads, or a cache shorter than pos+1 rows.
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
	p := make([]float32, pos+1)
	for h := range heads {
		qh := q[h*headDim : (h+1)*headDim]
		off := (h / group) * headDim
		m := float32(math.Inf(-1))
		for t := 0; t <= pos; t++ {
			k := kCache[t*kvDim+off : t*kvDim+off+headDim]
			var dot float32
			for i, qv := range qh {
				dot += qv * f16[k[i]]
			}
			p[t] = dot * scale
			m = max(m, p[t])
		}
		var sum float32
		for t := range p {
			p[t] = float32(math.Exp(float64(p[t] - m)))
			sum += p[t]
		}
		out := dst[h*headDim : (h+1)*headDim]
		clear(out)
		for t := range p {
			w := p[t] / sum
			v := vCache[t*kvDim+off : t*kvDim+off+headDim]
			for i := range out {
				out[i] += w * f16[v[i]]
			}
		}
	}
	return nil
}
