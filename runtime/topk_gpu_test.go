//go:build cgo

package runtime

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
)

// TestGPUTopKMatchesHost: the device top-k (Kernels.TopK) returns the MaxSampleCandidates best of
// a row in the candidate order — exactly TopCandidates' ids, with the row's logit bits (NaN
// payloads, -0 and -Inf included) — then sentinels when the row is shorter. Rows have many ties
// (a coarse grid), ±0, ±Inf, NaNs and subnormals; the sizes cover one select pass (<= 512), one
// merge (600, 8191), two (8193, 128256 = 2B4T's vocabulary) and three (140000: the ping-pong
// areas reused).
func TestGPUTopKMatchesHost(t *testing.T) {
	d, ks := newKernels(t)
	rng := rand.New(rand.NewPCG(5, 6))
	specials := []float32{float32(math.Inf(-1)), float32(math.Inf(1)), math.Float32frombits(0x7fc00001), math.Float32frombits(0xffc00000),
		float32(math.Copysign(0, -1)), 0, math.Float32frombits(1), math.Float32frombits(0x80000001)}
	for _, n := range []uint32{1, 5, 255, 256, 300, 512, 513, 600, 8191, 8193, 128256, 140000} {
		for _, variant := range []string{"ties", "specials", "all equal"} {
			if variant == "all equal" && n > 8193 {
				continue // the merges of equal keys are covered by the smaller rows
			}
			row := make([]float32, n)
			for i := range row {
				switch variant {
				case "ties":
					row[i] = float32(rng.IntN(64)-40) * 0.25
				case "specials":
					if rng.IntN(4) == 0 {
						row[i] = specials[rng.IntN(len(specials))]
					} else {
						row[i] = float32(rng.NormFloat64() * 4)
					}
				case "all equal":
					row[i] = 1.5
				}
			}
			logits := upload(t, d, row)
			scratch, err := d.NewBuffer(TopKScratchBytes(n))
			require.NoError(t, err)
			out, err := d.NewHostBuffer(TopKOutBytes)
			require.NoError(t, err)
			var dispatches int
			require.NoError(t, d.Run(func(s *gpu.Sequence) error {
				err := ks.TopK(s, logits.Whole(), scratch.Whole(), out.Whole(), n)
				dispatches = s.Dispatches()
				return err
			}))
			require.Equal(t, len(topKLevels(n)), dispatches, "n %d", n)
			got, err := gpu.Read[uint32](out, 0, 2*MaxSampleCandidates)
			require.NoError(t, err)
			want := TopCandidates(row, MaxSampleCandidates)
			for i := 0; i < MaxSampleCandidates; i++ {
				if i >= len(want) {
					require.Equal(t, [2]uint32{0xffffffff, 0}, [2]uint32{got[2*i], got[2*i+1]}, "n %d %s: entry %d after the row", n, variant, i)
					continue
				}
				require.Equal(t, [2]uint32{uint32(want[i]), math.Float32bits(row[want[i]])}, [2]uint32{got[2*i], got[2*i+1]},
					"n %d %s: candidate %d (id, logit bits)", n, variant, i)
			}
			scratch.Release()
			out.Release()
		}
	}
}

// TestGPUSampledGenerationOnDevice: seeded top-k sampling on the GPU takes the device candidate
// path (DecodeCandidates: the logits stay on the device, the best CandidateCount come back) for
// every decode step and gives cpuref's tokens, with and without a repetition penalty (which
// widens the candidate set), on a vocabulary of 2000 (4 select workgroups and a merge). Options
// that need the whole row (top-k 0, a penalty below 1) read it back instead, with cpuref's tokens
// too. Then DecodeCandidates is compared with cpuref's logits directly: the ids of TopCandidates
// and the logits' bits.
func TestGPUSampledGenerationOnDevice(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, func(o *model.SynthOptions) { o.Vocab = 2000 })
	g, c := newBackendPair(t, m, 64)
	var _ CandidateDecoder = g
	prompt := EncodePrompt(m.Tokenizer, "Hello world")
	const n = 12
	for _, tc := range []struct {
		opts   SamplerOptions
		device bool
	}{
		{SamplerOptions{Temperature: 0.8, TopK: 40, TopP: 0.95, Seed: 7}, true},
		{SamplerOptions{Temperature: 1.5, TopK: 200, MinP: 0.02, RepeatPenalty: 1.3, RepeatLastN: 16, Seed: 8}, true},
		{SamplerOptions{RepeatPenalty: 1.5, Seed: 9}, true}, // greedy with a penalty: 1 + penalised candidates
		{SamplerOptions{Temperature: 0.8, TopP: 0.9, Seed: 10}, false},
		{SamplerOptions{Temperature: 0.8, TopK: 40, RepeatPenalty: 0.9, Seed: 11}, false},
	} {
		var tokens [2][]int
		for i, b := range []Backend{g, c} {
			b.Reset()
			before := g.CandidateSteps()
			smp, err := NewSampler(tc.opts)
			require.NoError(t, err)
			st, err := Generate(b, m.Tokenizer, prompt, GenerateOptions{MaxTokens: n, Context: 64, IgnoreEOS: true, Sampler: smp})
			require.NoError(t, err)
			require.Len(t, st.Tokens, n)
			tokens[i] = st.Tokens
			if i == 0 {
				want := 0
				if tc.device {
					want = n - 1 // every decode step; the first token comes from the prefill's row
				}
				require.Equal(t, want, g.CandidateSteps()-before, "%+v: decode steps on the candidate path", tc.opts)
			}
		}
		require.Equal(t, tokens[1], tokens[0], "%+v: GPU tokens vs cpuref", tc.opts)
	}

	g.Reset()
	c.Reset()
	_, err := g.Prefill(prompt, false)
	require.NoError(t, err)
	_, err = c.Prefill(prompt, false)
	require.NoError(t, err)
	for i, tok := range []int{72, 1999, 0, 5} {
		k := []int{1, 40, 255, MaxSampleCandidates}[i]
		ids, logits, err := g.DecodeCandidates(tok, k)
		require.NoError(t, err)
		row, err := c.Decode(tok)
		require.NoError(t, err)
		require.Equal(t, TopCandidates(row, k), ids, "token %d: candidate ids", tok)
		for j, id := range ids {
			require.Equal(t, math.Float32bits(row[id]), math.Float32bits(logits[j]), "token %d: logit of candidate %d", tok, id)
		}
	}
	_, _, err = g.DecodeCandidates(1, MaxSampleCandidates+1)
	require.EqualError(t, err, "decode candidates: 257 candidates, must be in [1, 256]")
}

// TestGPUProfileCandidates: with profiling on, the candidate step is timed too — the step's
// kernels and the top-k once per decoded token — and returns the unprofiled step's candidates.
func TestGPUProfileCandidates(t *testing.T) {
	requireProfiledStep(t, 4, "topk", func(g *GPU, tok int) ([]int, int, error) {
		ids, _, err := g.DecodeCandidates(tok, 8)
		if err != nil {
			return nil, 0, err
		}
		return ids, ids[len(ids)-1], nil
	})
}
