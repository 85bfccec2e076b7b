package runtime

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// DefaultRepeatLastN is the number of most recent tokens the repetition penalty looks at when
// SamplerOptions.RepeatLastN is 0 (llama.cpp's default).
const DefaultRepeatLastN = 64

// SamplerOptions selects how the next token is picked from a row of logits.
type SamplerOptions struct {
	// Temperature divides the logits before the softmax; 0 means greedy (argmax, ties to the
	// lower token id). Must be finite and >= 0.
	Temperature float64
	// TopK keeps the K most likely tokens; 0 (or K >= vocabulary size) keeps all. Must be >= 0.
	TopK int
	// TopP keeps the smallest prefix of the candidates, most likely first, whose probability sum
	// reaches TopP (the token that crosses TopP is kept). 1 keeps all; must be in (0, 1]. The
	// zero value is treated as 1.
	TopP float64
	// MinP keeps only the candidates whose probability is at least MinP times the most likely
	// one's (llama.cpp's min_p), applied after top-p; 0 keeps all. Must be in [0, 1].
	MinP float64
	// Seed seeds the random generator (see Sampler).
	Seed uint64
	// RepeatPenalty > 0 penalises the tokens among the last RepeatLastN accepted ones: a positive
	// logit is divided by it, a negative one multiplied (llama.cpp's repeat_penalty). 1 is off;
	// the zero value is treated as 1.
	RepeatPenalty float64
	// RepeatLastN is the penalty window in tokens: 0 means DefaultRepeatLastN, a negative value
	// means every accepted token.
	RepeatLastN int
}

// Validate reports the first option outside its range, naming the option.
func (o SamplerOptions) Validate() error {
	switch {
	case math.IsNaN(o.Temperature) || math.IsInf(o.Temperature, 0) || o.Temperature < 0:
		return fmt.Errorf("temperature %v: must be finite and >= 0", o.Temperature)
	case o.TopK < 0:
		return fmt.Errorf("top-k %d: must be >= 0 (0 keeps every token)", o.TopK)
	case o.TopP != 0 && !(o.TopP > 0 && o.TopP <= 1):
		return fmt.Errorf("top-p %v: must be in (0, 1]", o.TopP)
	case !(o.MinP >= 0 && o.MinP <= 1):
		return fmt.Errorf("min-p %v: must be in [0, 1]", o.MinP)
	case o.RepeatPenalty != 0 && !(o.RepeatPenalty > 0 && !math.IsInf(o.RepeatPenalty, 0)):
		return fmt.Errorf("repeat penalty %v: must be finite and > 0", o.RepeatPenalty)
	}
	return nil
}

// Sampler picks tokens from logits on the host, so every backend yields the same tokens for the
// same seed and logits. The algorithm, in order:
//
//  1. Repetition penalty (when RepeatPenalty != 1): for each distinct token id among the last
//     RepeatLastN accepted tokens (Accept), its logit l becomes l/penalty if l > 0, else
//     l*penalty. The logits are converted to float64 first; the caller's slice is not modified.
//  2. Temperature 0: return the argmax (the lowest id among equal maxima). Otherwise:
//  3. Temperature: every logit l becomes l/T (float64 division).
//  4. Candidates are the ids with a finite scaled logit, sorted by scaled logit descending, ties
//     broken by lower id (a total order, so the result does not depend on the sort algorithm).
//  5. Top-k: keep the first K candidates (all when K is 0 or at least their number).
//  6. Softmax in float64 over the kept candidates: p_i = exp(l_i - l_max) / Σ_j exp(l_j - l_max),
//     the sum taken in sorted order.
//  7. Top-p (when TopP < 1): walking in sorted order with a running sum c of p_i, keep candidates
//     up to and including the first one where c >= TopP; at least one is kept.
//  8. Min-p (when MinP > 0): of those, keep the leading candidates with p_i >= MinP * p_0 (p_0 is
//     the most likely one's; the rest, sorted, have smaller p_i); at least one is kept.
//  9. One uniform draw u = (x >> 11) * 2^-53 in [0, 1), x the next uint64 of a PCG-DXSM
//     generator (math/rand/v2 NewPCG(Seed, 0); its output sequence is fixed by its
//     specification). With S the sum of the kept p_i, the result is the first kept candidate
//     whose running sum exceeds u*S (the last one if rounding leaves none).
//
// Non-finite logits: NaN is an error, +Inf is an error, -Inf marks an impossible token. A
// Sampler is not safe for concurrent use.
type Sampler struct {
	opts    SamplerOptions
	rng     *rand.PCG
	history []int // accepted tokens, the last window() kept
	scaled  []float64
	cands   []candidate
	probs   []float64
}

// candidate is one token id with its scaled logit.
type candidate struct {
	id    int
	logit float64
}

// NewSampler validates o (see SamplerOptions.Validate) and returns a Sampler seeded with o.Seed.
func NewSampler(o SamplerOptions) (*Sampler, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.TopP == 0 {
		o.TopP = 1
	}
	if o.RepeatPenalty == 0 {
		o.RepeatPenalty = 1
	}
	if o.RepeatLastN == 0 {
		o.RepeatLastN = DefaultRepeatLastN
	}
	return &Sampler{opts: o, rng: rand.NewPCG(o.Seed, 0)}, nil
}

// Options returns the options in effect (zero values replaced by their defaults).
func (s *Sampler) Options() SamplerOptions { return s.opts }

// Accept records token as the latest one of the sequence (prompt or generated) for the
// repetition penalty window.
func (s *Sampler) Accept(token int) {
	s.history = append(s.history, token)
	if n := s.opts.RepeatLastN; n > 0 && len(s.history) > 2*n {
		s.history = append(s.history[:0], s.history[len(s.history)-n:]...)
	}
}

// window returns the accepted tokens the penalty applies to.
func (s *Sampler) window() []int {
	if n := s.opts.RepeatLastN; n > 0 && len(s.history) > n {
		return s.history[len(s.history)-n:]
	}
	return s.history
}

// Sample picks the next token id from one row of logits (VocabSize values) by the algorithm in
// the Sampler documentation. It does not call Accept. It returns an error for an empty row, a NaN
// or +Inf logit, or a row whose logits are all -Inf.
func (s *Sampler) Sample(logits []float32) (int, error) {
	if len(logits) == 0 {
		return 0, fmt.Errorf("sampler: empty logits")
	}
	x := s.scaled[:0]
	for i, l := range logits {
		if math.IsNaN(float64(l)) || math.IsInf(float64(l), 1) {
			return 0, fmt.Errorf("sampler: logit of token %d is %v", i, l)
		}
		x = append(x, float64(l))
	}
	s.scaled = x
	if p := s.opts.RepeatPenalty; p != 1 {
		w := s.window()
		for i, id := range w {
			if id < 0 || id >= len(x) || slices.Contains(w[:i], id) {
				continue // outside the vocabulary, or penalised already
			}
			if x[id] > 0 {
				x[id] /= p
			} else {
				x[id] *= p
			}
		}
	}
	if s.opts.Temperature == 0 {
		best := -1
		for i, v := range x {
			if math.IsInf(v, -1) {
				continue
			}
			if best < 0 || v > x[best] {
				best = i
			}
		}
		if best < 0 {
			return 0, fmt.Errorf("sampler: every logit is -Inf")
		}
		return best, nil
	}
	c := s.cands[:0]
	for i, v := range x {
		v /= s.opts.Temperature
		if !math.IsInf(v, -1) {
			c = append(c, candidate{i, v})
		}
	}
	s.cands = c
	return s.draw(c)
}

// draw runs steps 5 to 9 of the algorithm on c, the candidates with a finite scaled logit in any
// order: top-k, softmax, top-p, min-p and the seeded draw (one value of the generator).
func (s *Sampler) draw(c []candidate) (int, error) {
	if len(c) == 0 {
		return 0, fmt.Errorf("sampler: every logit is -Inf")
	}
	c = topK(c, s.opts.TopK)
	p := s.probs[:0]
	var sum float64
	for _, cd := range c {
		e := math.Exp(cd.logit - c[0].logit)
		p = append(p, e)
		sum += e
	}
	s.probs = p
	var cum float64
	keep := len(p)
	for i := range p {
		p[i] /= sum
		cum += p[i]
		if s.opts.TopP < 1 && cum >= s.opts.TopP && keep == len(p) {
			keep = i + 1
		}
	}
	if mp := s.opts.MinP; mp > 0 {
		for i := 1; i < keep; i++ {
			if p[i] < mp*p[0] {
				keep = i
				break
			}
		}
	}
	p = p[:keep]
	var total float64
	for _, v := range p {
		total += v
	}
	u := float64(s.rng.Uint64()>>11) * (1.0 / (1 << 53))
	r := u * total
	cum = 0
	for i, v := range p {
		cum += v
		if cum > r {
			return c[i].id, nil
		}
	}
	return c[keep-1].id, nil
}

// less orders candidates by logit descending, then id ascending.
func less(a, b candidate) int {
	switch {
	case a.logit > b.logit:
		return -1
	case a.logit < b.logit:
		return 1
	}
	return a.id - b.id
}

// topK sorts c by less and returns its first k elements (all when k is 0 or >= len(c)). For a
// small k it selects with a bounded heap before sorting, which gives the same result because
// less is a total order.
func topK(c []candidate, k int) []candidate {
	if k <= 0 || k >= len(c) {
		slices.SortFunc(c, less)
		return c
	}
	// Keep the best k at the front: c[:k] is a heap with the worst kept candidate at the root.
	h := c[:k]
	worse := func(a, b candidate) bool { return less(a, b) > 0 }
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= len(h) {
				return
			}
			j := l
			if r := l + 1; r < len(h) && worse(h[r], h[l]) {
				j = r
			}
			if !worse(h[j], h[i]) {
				return
			}
			h[i], h[j] = h[j], h[i]
			i = j
		}
	}
	for i := k/2 - 1; i >= 0; i-- {
		down(i)
	}
	for _, cd := range c[k:] {
		if less(cd, h[0]) < 0 {
			h[0] = cd
			down(0)
		}
	}
	slices.SortFunc(h, less)
	return h
}
