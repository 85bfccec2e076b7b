package runtime

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// firstDraw is the uniform number in [0, 1) a Sampler seeded with seed draws first: the top 53
// bits of the first output of PCG-DXSM(seed, 0), as the Sampler documents.
func firstDraw(seed uint64) float64 {
	return float64(rand.NewPCG(seed, 0).Uint64()>>11) / (1 << 53)
}

// pick returns the index chosen by a draw u over probabilities p (already cut): the first index
// whose running sum exceeds u*Σp.
func pick(u float64, p []float64) int {
	var s float64
	for _, v := range p {
		s += v
	}
	var c float64
	for i, v := range p {
		c += v
		if c > u*s {
			return i
		}
	}
	return len(p) - 1
}

func sample(t *testing.T, o SamplerOptions, logits []float32) int {
	t.Helper()
	s, err := NewSampler(o)
	require.NoError(t, err)
	id, err := s.Sample(logits)
	require.NoError(t, err)
	return id
}

func TestGreedyTiesToLowerID(t *testing.T) {
	require.Equal(t, 1, sample(t, SamplerOptions{}, []float32{1, 3, 3, 2}))
	require.Equal(t, 2, sample(t, SamplerOptions{}, []float32{float32(math.Inf(-1)), -5, -1}))
}

func TestTopK1IsGreedy(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	logits := make([]float32, 1000)
	for trial := range 20 {
		for i := range logits {
			logits[i] = float32(r.NormFloat64() * 3)
		}
		want := sample(t, SamplerOptions{}, logits)
		for _, temp := range []float64{0.1, 1, 5} {
			got := sample(t, SamplerOptions{Temperature: temp, TopK: 1, TopP: 0.5, Seed: uint64(trial)}, logits)
			require.Equal(t, want, got, "trial %d temp %v", trial, temp)
		}
	}
}

func TestTopPCutIncludesCrossingToken(t *testing.T) {
	// p = (0.5, 0.3, 0.15, 0.05) as logits ln p at temperature 1. Top-p 0.75: the running sums
	// are 0.5 < 0.75, then 0.8 >= 0.75, so ids {0, 1} are kept and id 0 wins iff u*0.8 < 0.5.
	// Top-p 0.85 keeps {0, 1, 2} (0.8 < 0.85 <= 0.95).
	p := []float64{0.5, 0.3, 0.15, 0.05}
	logits := make([]float32, len(p))
	for i, v := range p {
		logits[i] = float32(math.Log(v))
	}
	seen := map[int]bool{}
	for seed := range uint64(300) {
		u := firstDraw(seed)
		got := sample(t, SamplerOptions{Temperature: 1, TopP: 0.75, Seed: seed}, logits)
		require.Equal(t, pick(u, p[:2]), got, "seed %d u %v", seed, u)
		seen[got] = true
		got = sample(t, SamplerOptions{Temperature: 1, TopP: 0.85, Seed: seed}, logits)
		require.Equal(t, pick(u, p[:3]), got, "seed %d u %v", seed, u)
		// Top-p 1 keeps everything.
		got = sample(t, SamplerOptions{Temperature: 1, TopP: 1, Seed: seed}, logits)
		require.Equal(t, pick(u, p), got, "seed %d u %v", seed, u)
	}
	require.Equal(t, map[int]bool{0: true, 1: true}, seen, "both kept ids appear over 300 seeds")
}

func TestTemperatureScaling(t *testing.T) {
	// Logits (0, ln 3), sorted order id 1 then id 0. At T = 1 the probabilities are (3/4, 1/4);
	// at T = 2 the scaled logits are (ln(3)/2, 0), so p = (√3, 1)/(1+√3) = (0.63397, 0.36603).
	logits := []float32{0, float32(math.Log(3))}
	l1 := float64(logits[1])
	order := []int{1, 0}
	for seed := range uint64(200) {
		u := firstDraw(seed)
		want1 := order[pick(u, []float64{math.Exp(l1), 1})]
		want2 := order[pick(u, []float64{math.Exp(l1 / 2), 1})]
		require.Equal(t, want1, sample(t, SamplerOptions{Temperature: 1, Seed: seed}, logits), "seed %d", seed)
		require.Equal(t, want2, sample(t, SamplerOptions{Temperature: 2, Seed: seed}, logits), "seed %d", seed)
	}
	// A draw between the two thresholds tells them apart: 0.634 < u < 0.75 gives id 1 at T=1 and
	// id 0 at T=2. Find such a seed to make sure the test exercises the difference.
	found := false
	for seed := range uint64(1000) {
		if u := firstDraw(seed); u > 0.64 && u < 0.74 {
			require.Equal(t, 1, sample(t, SamplerOptions{Temperature: 1, Seed: seed}, logits))
			require.Equal(t, 0, sample(t, SamplerOptions{Temperature: 2, Seed: seed}, logits))
			found = true
			break
		}
	}
	require.True(t, found)
}

func TestTopKKeepsBest(t *testing.T) {
	// Logits (3, 5, 1, 4, 2) with k = 2 keep ids 1 and 3; softmax over {5, 4} gives p = 1/(1+e^-1) = 0.731 for id 1.
	logits := []float32{3, 5, 1, 4, 2}
	for seed := range uint64(200) {
		u := firstDraw(seed)
		want := []int{1, 3}[pick(u, []float64{1, math.Exp(-1)})]
		require.Equal(t, want, sample(t, SamplerOptions{Temperature: 1, TopK: 2, Seed: seed}, logits), "seed %d", seed)
	}
}

func TestTiesSortByLowerID(t *testing.T) {
	// Three equal logits: p = 1/3 each in id order 0, 1, 2 (ties broken by lower id), so the draw
	// picks 0 below 1/3, 1 below 2/3, else 2. With top-k 2 only ids 0 and 1 remain.
	logits := []float32{1, 1, 1}
	for seed := range uint64(200) {
		u := firstDraw(seed)
		require.Equal(t, pick(u, []float64{1, 1, 1}), sample(t, SamplerOptions{Temperature: 0.7, Seed: seed}, logits))
		require.Equal(t, pick(u, []float64{1, 1}), sample(t, SamplerOptions{Temperature: 0.7, TopK: 2, Seed: seed}, logits))
	}
}

func TestSamplerDeterministicForSeed(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	logits := make([]float32, 5000)
	for i := range logits {
		logits[i] = float32(r.NormFloat64())
	}
	run := func(seed uint64) []int {
		s, err := NewSampler(SamplerOptions{Temperature: 0.8, TopK: 40, TopP: 0.95, Seed: seed, RepeatPenalty: 1.1})
		require.NoError(t, err)
		var out []int
		for range 50 {
			id, err := s.Sample(logits)
			require.NoError(t, err)
			s.Accept(id)
			out = append(out, id)
		}
		return out
	}
	a := run(42)
	require.Equal(t, a, run(42))
	require.NotEqual(t, a, run(43))
}

func TestTopKHeapEqualsFullSort(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 50 {
		n := 1 + r.IntN(300)
		c := make([]candidate, n)
		for i := range c {
			c[i] = candidate{i, float64(r.IntN(20))} // many ties
		}
		full := topK(append([]candidate(nil), c...), 0)
		k := 1 + r.IntN(n)
		require.Equal(t, full[:k], topK(append([]candidate(nil), c...), k), "trial %d k %d", trial, k)
	}
}

func TestRepeatPenalty(t *testing.T) {
	greedy := func(o SamplerOptions, history []int, logits []float32) int {
		s, err := NewSampler(o)
		require.NoError(t, err)
		for _, h := range history {
			s.Accept(h)
		}
		id, err := s.Sample(logits)
		require.NoError(t, err)
		return id
	}
	// Positive logits are divided: 2 -> 1 < 1.5.
	require.Equal(t, 1, greedy(SamplerOptions{RepeatPenalty: 2}, []int{0}, []float32{2, 1.5, -1}))
	// Negative logits are multiplied: -1 -> -2 < -1.5.
	require.Equal(t, 1, greedy(SamplerOptions{RepeatPenalty: 2}, []int{0}, []float32{-1, -1.5}))
	// Each distinct token is penalised once however often it occurs: 4 -> 2 > 1.5 (three
	// applications would give 0.5).
	require.Equal(t, 0, greedy(SamplerOptions{RepeatPenalty: 2}, []int{0, 0, 0}, []float32{4, 1.5}))
	// The window: with RepeatLastN 1 only the last token (1) is penalised.
	require.Equal(t, 0, greedy(SamplerOptions{RepeatPenalty: 2, RepeatLastN: 1}, []int{0, 1}, []float32{2, 3}))
	require.Equal(t, 1, greedy(SamplerOptions{RepeatPenalty: 2, RepeatLastN: 2}, []int{0, 1}, []float32{2, 3}))
	// Penalty 1 (and the zero value) is off.
	require.Equal(t, 0, greedy(SamplerOptions{RepeatPenalty: 1}, []int{0}, []float32{2, 1.5}))
	require.Equal(t, 0, greedy(SamplerOptions{}, []int{0}, []float32{2, 1.5}))
}

func TestSamplerErrors(t *testing.T) {
	for _, o := range []SamplerOptions{
		{Temperature: -1}, {Temperature: math.NaN()}, {Temperature: math.Inf(1)},
		{TopK: -1}, {TopP: 1.5}, {TopP: -0.1}, {RepeatPenalty: -1}, {RepeatPenalty: math.Inf(1)},
	} {
		_, err := NewSampler(o)
		require.Error(t, err, "%+v", o)
	}
	s, err := NewSampler(SamplerOptions{Temperature: 1})
	require.NoError(t, err)
	_, err = s.Sample(nil)
	require.ErrorContains(t, err, "empty")
	_, err = s.Sample([]float32{1, float32(math.NaN())})
	require.ErrorContains(t, err, "token 1")
	inf := float32(math.Inf(-1))
	_, err = s.Sample([]float32{inf, inf})
	require.ErrorContains(t, err, "-Inf")
	// A -Inf token is never drawn.
	for seed := range uint64(50) {
		require.Equal(t, 1, sample(t, SamplerOptions{Temperature: 1, Seed: seed}, []float32{inf, 0}))
	}
}

// TestMinP: with logits ln(8), ln(4), ln(2), ln(1) at temperature 1 the probabilities are 8/15,
// 4/15, 2/15, 1/15; min-p 0.3 keeps p >= 0.3·8/15 (the first two), min-p 0.2 the first three, and
// the draw then picks among the kept ones as the Sampler documents.
func TestMinP(t *testing.T) {
	logits := []float32{float32(math.Log(2)), float32(math.Log(8)), float32(math.Log(1)), float32(math.Log(4))}
	ids := []int{1, 3, 0, 2} // most likely first
	probs := []float64{8, 4, 2, 1}
	for _, c := range []struct {
		minP float64
		keep int
	}{{0, 4}, {0.2, 3}, {0.3, 2}, {0.6, 1}, {1, 1}} {
		for seed := uint64(0); seed < 40; seed++ {
			want := ids[pick(firstDraw(seed), probs[:c.keep])]
			got := sample(t, SamplerOptions{Temperature: 1, MinP: c.minP, Seed: seed}, logits)
			require.Equal(t, want, got, "min-p %v seed %d", c.minP, seed)
		}
	}
	_, err := NewSampler(SamplerOptions{Temperature: 1, MinP: 1.5})
	require.ErrorContains(t, err, "min-p 1.5")
	_, err = NewSampler(SamplerOptions{Temperature: 1, MinP: math.NaN()})
	require.ErrorContains(t, err, "min-p")
}
