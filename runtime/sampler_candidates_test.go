package runtime

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// candidateRow draws a logits row of vocab values on a coarse grid (many ties) times scale, with
// some -Inf, -0 and +0; nonFinite adds a NaN or +Inf at random places, or makes the row all -Inf.
func candidateRow(r *rand.Rand, vocab int, scale float32) []float32 {
	row := make([]float32, vocab)
	for i := range row {
		switch r.IntN(40) {
		case 0:
			row[i] = float32(math.Inf(-1))
		case 1:
			row[i] = float32(math.Copysign(0, -1))
		case 2:
			row[i] = 0
		default:
			row[i] = float32(r.IntN(24)-12) * 0.5 * scale
		}
	}
	switch r.IntN(50) {
	case 0:
		row[r.IntN(vocab)] = float32(math.NaN())
		row[r.IntN(vocab)] = float32(math.Inf(1))
	case 1:
		row[r.IntN(vocab)] = float32(math.Inf(1))
	case 2:
		for i := range row {
			row[i] = float32(math.Inf(-1))
		}
	}
	return row
}

// gather returns logits[ids[i]].
func gather(logits []float32, ids []int) []float32 {
	out := make([]float32, len(ids))
	for i, id := range ids {
		out[i] = logits[id]
	}
	return out
}

// TestSampleCandidatesEqualsSample: for random rows with ties, -0, -Inf, occasional NaN/+Inf,
// extreme scales and temperatures, and random option combinations (penalised tokens drawn from the
// row's best ones, so the penalty moves them out of the top), SampleCandidates on the best
// CandidateCount ids (TopCandidates, sometimes a few more) gives exactly the token — or the error
// — Sample gives on the whole row, draw after draw with the same seed. Options that need the
// whole row (CandidateCount 0) are sampled both ways with Sample, to keep the generators in step.
func TestSampleCandidatesEqualsSample(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	temps := []float64{0, 0.05, 0.8, 1, 3, 1e-30, 1e30, 1e-300, 1e300}
	topKs := []int{0, 1, 2, 5, 40, 100, 256}
	topPs := []float64{0, 0.3, 0.95}
	minPs := []float64{0, 0.05, 0.5}
	penalties := []float64{0, 1, 1.1, 2, 1e30, 0.8}
	lastNs := []int{0, 3, -1}
	scales := []float32{1, 1, 1, 1e10, 1e-12, 1e30}
	vocabs := []int{2, 7, 50, 300, 1000}
	onCandidates, onRow, errs := 0, 0, 0
	for trial := range 6000 {
		o := SamplerOptions{
			Temperature: temps[r.IntN(len(temps))], TopK: topKs[r.IntN(len(topKs))],
			TopP: topPs[r.IntN(len(topPs))], MinP: minPs[r.IntN(len(minPs))],
			RepeatPenalty: penalties[r.IntN(len(penalties))], RepeatLastN: lastNs[r.IntN(len(lastNs))],
			Seed: uint64(trial),
		}
		vocab := vocabs[r.IntN(len(vocabs))]
		scale := scales[r.IntN(len(scales))]
		row := candidateRow(r, vocab, scale)
		best := TopCandidates(row, 12)
		full, cand := mustSampler(t, o), mustSampler(t, o)
		for range r.IntN(20) {
			h := best[r.IntN(len(best))]
			switch r.IntN(10) {
			case 0:
				h = -1
			case 1:
				h = vocab + r.IntN(3)
			case 2:
				h = r.IntN(vocab)
			}
			full.Accept(h)
			cand.Accept(h)
		}
		for step := range 3 {
			if step > 0 {
				row = candidateRow(r, vocab, scale)
			}
			want, wantErr := full.Sample(row)
			var got int
			var gotErr error
			if n := cand.CandidateCount(vocab); n > 0 {
				onCandidates++
				n = min(n+r.IntN(3), vocab) // more candidates than needed change nothing
				ids := TopCandidates(row, n)
				got, gotErr = cand.SampleCandidates(ids, gather(row, ids), vocab)
			} else {
				onRow++
				got, gotErr = cand.Sample(row)
			}
			if wantErr != nil {
				errs++
				require.EqualError(t, gotErr, wantErr.Error(), "trial %d step %d options %+v", trial, step, o)
				break
			}
			require.NoError(t, gotErr, "trial %d step %d options %+v", trial, step, o)
			require.Equal(t, want, got, "trial %d step %d options %+v vocab %d", trial, step, o, vocab)
			full.Accept(want)
			cand.Accept(want)
		}
	}
	t.Logf("%d draws from candidates, %d from the row, %d errors", onCandidates, onRow, errs)
	require.Greater(t, onCandidates, 5000, "the candidate path ran")
	require.Greater(t, onRow, 1000, "the whole-row cases ran")
	require.Greater(t, errs, 50, "the error cases ran")
}

func mustSampler(t *testing.T, o SamplerOptions) *Sampler {
	t.Helper()
	s, err := NewSampler(o)
	require.NoError(t, err)
	return s
}

// TestCandidateCount: the documented cases — k (+ the distinct penalised ids inside the
// vocabulary) for top-k sampling and 1 (+ them) for greedy — and the whole-row cases.
func TestCandidateCount(t *testing.T) {
	count := func(o SamplerOptions, vocab int, history ...int) int {
		s := mustSampler(t, o)
		for _, h := range history {
			s.Accept(h)
		}
		return s.CandidateCount(vocab)
	}
	require.Equal(t, 40, count(SamplerOptions{Temperature: 0.8, TopK: 40, TopP: 0.95}, 1000, 1, 2, 3))
	// Penalised: ids 5 and 7 (5 twice; -1 and 1000 outside the vocabulary) add 2.
	require.Equal(t, 42, count(SamplerOptions{Temperature: 0.8, TopK: 40, RepeatPenalty: 1.3}, 1000, 5, 5, 7, -1, 1000))
	// Only the window counts: RepeatLastN 1 leaves 7.
	require.Equal(t, 41, count(SamplerOptions{Temperature: 0.8, TopK: 40, RepeatPenalty: 1.3, RepeatLastN: 1}, 1000, 5, 7))
	require.Equal(t, 1, count(SamplerOptions{}, 1000, 5))
	require.Equal(t, 3, count(SamplerOptions{RepeatPenalty: 2}, 1000, 5, 6))
	require.Equal(t, 256, count(SamplerOptions{Temperature: 1, TopK: 255, RepeatPenalty: 2}, 1000, 9))
	require.Equal(t, 40, count(SamplerOptions{Temperature: 1e-30, TopK: 40}, 1000))
	require.Equal(t, 40, count(SamplerOptions{Temperature: 1e30, TopK: 40}, 1000))
	for name, c := range map[string]int{
		"top-k 0 keeps all":           count(SamplerOptions{Temperature: 0.8, TopP: 0.9}, 1000),
		"penalty < 1 raises logits":   count(SamplerOptions{Temperature: 0.8, TopK: 40, RepeatPenalty: 0.9}, 1000, 5),
		"greedy, penalty < 1":         count(SamplerOptions{RepeatPenalty: 0.9}, 1000, 5),
		"temperature below 1e-30":     count(SamplerOptions{Temperature: 1e-31, TopK: 40}, 1000),
		"temperature above 1e30":      count(SamplerOptions{Temperature: 1e31, TopK: 40}, 1000),
		"over MaxSampleCandidates":    count(SamplerOptions{Temperature: 1, TopK: 256, RepeatPenalty: 2}, 1000, 9),
		"k + penalised >= vocab":      count(SamplerOptions{Temperature: 1, TopK: 9, RepeatPenalty: 2}, 10, 3),
		"top-k equal to a tiny vocab": count(SamplerOptions{Temperature: 1, TopK: 5}, 5),
	} {
		require.Zero(t, c, name)
	}
}

// TestSampleCandidatesNeedsPenalisedExtra: the best raw logit (id 3) is penalised below the next
// one, so greedy and top-1 sampling pick id 4, which only the (1 + penalised) best hold.
func TestSampleCandidatesNeedsPenalisedExtra(t *testing.T) {
	row := []float32{0, 1, 2, 10, 9, 8, 0, 0, 0, 0}
	for _, o := range []SamplerOptions{{RepeatPenalty: 100}, {Temperature: 1, TopK: 1, RepeatPenalty: 100, Seed: 3}} {
		s := mustSampler(t, o)
		s.Accept(3)
		want, err := s.Sample(row)
		require.NoError(t, err)
		require.Equal(t, 4, want)
		n := s.CandidateCount(len(row))
		require.Equal(t, 2, n)
		ids := TopCandidates(row, n)
		require.Equal(t, []int{3, 4}, ids)
		got, err := s.SampleCandidates(ids, gather(row, ids), len(row))
		require.NoError(t, err)
		require.Equal(t, 4, got)
	}
}

// TestTopCandidatesOrder: key descending with -0 = +0, ties to the lower id, NaN and +Inf first
// (by id), -Inf last.
func TestTopCandidatesOrder(t *testing.T) {
	inf, nan, negZero := float32(math.Inf(1)), float32(math.NaN()), float32(math.Copysign(0, -1))
	row := []float32{1, -inf, 2, 0, negZero, 2, inf, -1, nan, 1e-45, -1e-45}
	require.Equal(t, []int{6, 8, 2, 5, 0, 9, 3, 4, 10, 7, 1}, TopCandidates(row, 20))
	require.Equal(t, []int{6, 8, 2}, TopCandidates(row, 3))
	require.Equal(t, uint32(0x007fffff), CandidateKey(-inf))
	require.Equal(t, uint32(0xffffffff), CandidateKey(-nan))
	require.Equal(t, CandidateKey(0), CandidateKey(negZero))
}

// TestSampleCandidatesRejects: lists that cannot be the best candidates of a row.
func TestSampleCandidatesRejects(t *testing.T) {
	s := mustSampler(t, SamplerOptions{Temperature: 1, TopK: 2})
	for name, c := range map[string]struct {
		ids    []int
		logits []float32
		want   string
	}{
		"too few":       {[]int{0}, []float32{1}, "sampler: 1 candidates, need the best 2"},
		"lengths":       {[]int{0, 1}, []float32{1}, "sampler: 2 candidate ids but 1 logits"},
		"out of order":  {[]int{0, 1}, []float32{1, 2}, "sampler: candidate 1 (id 1) is out of the candidate order"},
		"tie order":     {[]int{1, 0}, []float32{1, 1}, "sampler: candidate 1 (id 0) is out of the candidate order"},
		"repeated":      {[]int{1, 1}, []float32{1, 1}, "sampler: candidate 1 (id 1) is out of the candidate order"},
		"outside vocab": {[]int{0, 10}, []float32{2, 1}, "sampler: candidate 1 has id 10 outside the vocabulary [0, 10)"},
	} {
		_, err := s.SampleCandidates(c.ids, c.logits, 10)
		require.EqualError(t, err, c.want, name)
	}
	_, err := mustSampler(t, SamplerOptions{Temperature: 1}).SampleCandidates([]int{0}, []float32{1}, 10)
	require.EqualError(t, err, "sampler: these options need the whole logits row, not candidates")
}
