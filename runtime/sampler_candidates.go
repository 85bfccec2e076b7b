package runtime

import (
	"fmt"
	"math"
	"slices"
	"sort"
)

// MaxSampleCandidates is the most candidates CandidateCount asks for, and the most a
// CandidateDecoder returns: the K of the Vulkan backend's top-k kernel (shaders/topk.comp).
// Options that need more read the full logits row instead.
const MaxSampleCandidates = 256

// The temperatures the candidate path takes (see Sampler.CandidateCount): within them, dividing
// any finite float32 logit by the temperature in float64 gives a normal float64 (|l|/T between
// 2^-149/1e30 ≈ 1.4e-75 and 3.4e38/1e-30 ≈ 3.4e68), so the division is strictly increasing.
const (
	candidateMinTemp = 1e-30
	candidateMaxTemp = 1e30
)

// CandidateKey is the sort key of a logit in the candidate order: candidates are ranked by key
// descending, then by token id ascending. For finite values and -Inf the key order is the float
// order with -0 equal to +0 (so the candidate order is the Sampler's order of raw logits, ties to
// the lower id); NaN and +Inf share the largest key, so when a row holds any of them they come
// first, lowest id first — the token whose logit Sample reports as an error. The key of the Go
// function and of shaders/topk.comp's key_of are the same 32-bit map: ±0 → 0x80000000, a positive
// x → bits|0x80000000, a negative x → ^bits, NaN and +Inf → 0xffffffff. The smallest key of a
// logit is -Inf's, 0x007fffff.
func CandidateKey(l float32) uint32 {
	b := math.Float32bits(l)
	a := b & 0x7fffffff
	switch {
	case a > 0x7f800000 || b == 0x7f800000: // NaN, +Inf
		return 0xffffffff
	case a == 0:
		return 0x80000000
	case b&0x80000000 != 0:
		return ^b
	}
	return b | 0x80000000
}

// TopCandidates returns the ids of the n best logits of a row in the candidate order
// (CandidateKey descending, then id ascending): the host twin of the Vulkan backend's top-k
// kernel, which must return exactly these ids. n larger than the row returns every id.
func TopCandidates(logits []float32, n int) []int {
	ids := make([]int, len(logits))
	for i := range ids {
		ids[i] = i
	}
	sort.SliceStable(ids, func(a, b int) bool {
		return CandidateKey(logits[ids[a]]) > CandidateKey(logits[ids[b]]) // stable: ties keep id order
	})
	return ids[:min(max(n, 0), len(ids))]
}

// penalized returns the distinct token ids in [0, vocab) among the repetition-penalty window, in
// first-occurrence order (nil when the penalty is off): the tokens Sample penalizes.
func (s *Sampler) penalized(vocab int) []int {
	if s.opts.RepeatPenalty == 1 {
		return nil
	}
	var out []int
	for _, id := range s.window() {
		if id >= 0 && id < vocab && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// CandidateCount is how many of the best logits of a vocab-token row (in the candidate order,
// TopCandidates) SampleCandidates needs to pick the token Sample would pick from the whole row,
// given the options and the tokens accepted so far; 0 means the options need the whole row.
//
// The device path (a count > 0) takes: repetition penalty off (1) or >= 1, and either greedy
// (temperature 0; count 1 + P) or top-k sampling (TopK = k > 0, temperature in [1e-30, 1e30];
// count k + P), P being the number of distinct penalized tokens in the window; and the count at
// most MaxSampleCandidates and below vocab. Everything else reads the whole row: TopK = 0 or
// k + P > MaxSampleCandidates (top-p and min-p alone look at every token), a penalty below 1
// (it raises the logits of penalized tokens, which may then come from anywhere in the row), and
// extreme temperatures (below).
//
// Why the count suffices. Sample ranks the finite values v_i by (v descending, id ascending) and
// keeps the first min(k, F) (F the number of finite ones); everything after that — softmax, top-p,
// min-p, the draw — depends only on those kept candidates and their values. Let L be the m = k + P
// best tokens by raw logit (candidate order) and S the kept set. Claim: S ⊆ L.
//   - Unpenalized tokens have v = f(l) = float64(l)/T. For T in [1e-30, 1e30] every finite float32
//     l gives |l/T| in the normal float64 range, where rounding moves a value by a relative 2^-53
//     while distinct float32 values differ by a relative 2^-24 or more, so a > b implies
//     f(a) > f(b): f is strictly increasing (and ±0 map to ±0, equal), so among unpenalized tokens
//     Sample's order is the candidate order. (Greedy has no division: f is the identity.)
//   - A penalized token's value g(l) = f(l/p) for l > 0, f(l·p) otherwise (rounded in float64) is
//     at most f(l) when p >= 1: l/p <= l and l·p <= l before rounding, and rounding and f are
//     monotonic.
//   - Take a token t outside L. At least m = k + P tokens precede it in the candidate order, at
//     most P of them penalized (t itself may be), so at least k unpenalized tokens u precede it:
//     l_u > l_t, or l_u = l_t with a lower id. Then v_u = f(l_u) >= f(l_t) >= v_t, and where equal,
//     u has the lower id (f strict: equal values come from equal raw logits, or from t's penalty
//     lowering it onto f(l_u) — still u first). So k candidates precede t in Sample's order and t
//     is not kept (or is -Inf and not a candidate at all).
//
// Given S ⊆ L and the same values (SampleCandidates repeats Sample's arithmetic on L), the first
// min(k, F) finite candidates of L in Sample's order are S in the same order, and the seeded draw
// consumes one value of the generator as Sample does; so the token is the same. A row with a NaN
// or +Inf puts them first in L (CandidateKey), so SampleCandidates reports the same error as
// Sample (the lowest such id); a row whose candidates are all -Inf after the penalty holds at
// least one unpenalized -Inf candidate, so every token after it is -Inf too, and both report that.
func (s *Sampler) CandidateCount(vocab int) int {
	o := s.opts
	if o.RepeatPenalty < 1 {
		return 0
	}
	k := 1
	if o.Temperature != 0 {
		if o.TopK <= 0 || o.Temperature < candidateMinTemp || o.Temperature > candidateMaxTemp {
			return 0
		}
		k = o.TopK
	}
	m := k + len(s.penalized(vocab))
	if m > MaxSampleCandidates || m >= vocab {
		return 0
	}
	return m
}

// SampleCandidates picks the next token from the best logits of a vocab-token row — ids[i] with
// logit logits[i], the first n of the row in the candidate order (TopCandidates), n at least
// CandidateCount(vocab) > 0 — and returns exactly the token Sample would return from the whole
// row (and draws the same one value of the generator; see CandidateCount for why). Like Sample it
// does not call Accept. Errors: options that need the whole row (CandidateCount 0), fewer
// candidates than needed, lengths that differ, an id outside [0, vocab), a list out of the
// candidate order (which includes a repeated id), and Sample's own errors (a NaN or +Inf logit,
// every logit -Inf), with Sample's messages.
func (s *Sampler) SampleCandidates(ids []int, logits []float32, vocab int) (int, error) {
	need := s.CandidateCount(vocab)
	switch {
	case need == 0:
		return 0, fmt.Errorf("sampler: these options need the whole logits row, not candidates")
	case len(ids) != len(logits):
		return 0, fmt.Errorf("sampler: %d candidate ids but %d logits", len(ids), len(logits))
	case len(ids) < need:
		return 0, fmt.Errorf("sampler: %d candidates, need the best %d", len(ids), need)
	}
	for i, id := range ids {
		if id < 0 || id >= vocab {
			return 0, fmt.Errorf("sampler: candidate %d has id %d outside the vocabulary [0, %d)", i, id, vocab)
		}
		if i > 0 {
			a, b := CandidateKey(logits[i-1]), CandidateKey(logits[i])
			if a < b || a == b && ids[i-1] >= id {
				return 0, fmt.Errorf("sampler: candidate %d (id %d) is out of the candidate order", i, id)
			}
		}
	}
	// NaN and +Inf rank first, lowest id first: the token Sample names.
	if l := float64(logits[0]); math.IsNaN(l) || math.IsInf(l, 1) {
		return 0, fmt.Errorf("sampler: logit of token %d is %v", ids[0], logits[0])
	}
	x := s.scaled[:0]
	for _, l := range logits {
		x = append(x, float64(l))
	}
	s.scaled = x
	if p := s.opts.RepeatPenalty; p != 1 {
		for _, id := range s.penalized(vocab) {
			if i := slices.Index(ids, id); i >= 0 {
				if x[i] > 0 {
					x[i] /= p
				} else {
					x[i] *= p
				}
			}
		}
	}
	if s.opts.Temperature == 0 {
		best := -1
		for i, v := range x {
			if !math.IsInf(v, -1) && (best < 0 || v > x[best] || v == x[best] && ids[i] < ids[best]) {
				best = i
			}
		}
		if best < 0 {
			return 0, fmt.Errorf("sampler: every logit is -Inf")
		}
		return ids[best], nil
	}
	c := s.cands[:0]
	for i, v := range x {
		v /= s.opts.Temperature
		if !math.IsInf(v, -1) {
			c = append(c, candidate{ids[i], v})
		}
	}
	s.cands = c
	return s.draw(c)
}
