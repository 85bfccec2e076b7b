//go:build cgo

package runtime

import (
	"fmt"
	"math"

	"github.com/bitgpu/bitgpu/gpu"
)

// gpuCandidates is the state of GPU.DecodeCandidates: a decode step recorded with the top-k
// selection after the LM head, the device-local logits it writes, the top-k scratch and the
// host-visible result (MaxSampleCandidates (id, logit bits) pairs).
type gpuCandidates struct {
	seq                  *gpu.Sequence
	timer                *gpu.Timer // when profiling: forward + topk
	logits, scratch, out *gpu.Buffer
	steps                int
}

func (c *gpuCandidates) release() {
	if c.seq != nil {
		c.seq.Release()
	}
	if c.timer != nil {
		c.timer.Release()
	}
	for _, b := range []*gpu.Buffer{c.logits, c.scratch, c.out} {
		if b != nil {
			b.Release()
		}
	}
}

// newCandidates allocates the buffers and records the step (forward pass of one token, then
// Kernels.TopK over its logits).
func (g *GPU) newCandidates() (c *gpuCandidates, err error) {
	vocab := uint32(g.cfg.VocabSize)
	c = &gpuCandidates{}
	defer func() {
		if err != nil {
			c.release()
		}
	}()
	if c.logits, err = g.dev.NewBuffer(4 * uint64(vocab)); err != nil {
		return nil, err
	}
	if c.scratch, err = g.dev.NewBuffer(TopKScratchBytes(vocab)); err != nil {
		return nil, err
	}
	if c.out, err = g.dev.NewHostBuffer(TopKOutBytes); err != nil {
		return nil, err
	}
	if c.seq, err = g.dev.NewSequence(); err != nil {
		return nil, err
	}
	if g.profSeq != nil { // profiling: time this step too, the selection included
		if c.timer, err = g.dev.NewTimer(profileMarks(len(g.layers)) + 1); err != nil {
			return nil, err
		}
	}
	if err = g.recordForward(c.seq, 1, c.timer, c.logits); err != nil {
		return nil, err
	}
	if err = g.ks.TopK(c.seq, c.logits.Whole(), c.scratch.Whole(), c.out.Whole(), vocab); err != nil {
		return nil, err
	}
	if c.timer != nil {
		err = c.seq.Mark(c.timer, "topk")
	}
	return c, err
}

// DecodeCandidates appends token to the KV cache and returns the n best logits of the next token
// (1 <= n <= MaxSampleCandidates, n <= VocabSize) with their ids, in the candidate order
// (CandidateKey descending, then id ascending; the first n of TopCandidates of the row Decode
// would return), for Sampler.SampleCandidates. The selection runs on the device (Kernels.TopK
// after the LM head, recorded on first use and replayed), so 8n bytes come back per token instead
// of the 4·VocabSize of the logits row; the logits are the row's bits. It implements
// CandidateDecoder.
func (g *GPU) DecodeCandidates(token, n int) ([]int, []float32, error) {
	if n < 1 || n > MaxSampleCandidates || n > g.cfg.VocabSize {
		return nil, nil, fmt.Errorf("decode candidates: %d candidates, must be in [1, %d]", n, min(MaxSampleCandidates, g.cfg.VocabSize))
	}
	if err := g.checkRoom(1); err != nil {
		return nil, nil, err
	}
	if err := g.checkTokens([]int{token}); err != nil {
		return nil, nil, err
	}
	if g.cand == nil {
		c, err := g.newCandidates()
		if err != nil {
			return nil, nil, err
		}
		g.cand = c
	}
	c := g.cand
	if err := g.run(c.seq, []int{token}); err != nil {
		return nil, nil, err
	}
	if c.timer != nil {
		if err := g.collectProfile(c.timer); err != nil {
			return nil, nil, err
		}
	}
	c.steps++
	pairs, err := gpu.Read[uint32](c.out, 0, 2*n)
	if err != nil {
		return nil, nil, err
	}
	ids, logits := make([]int, n), make([]float32, n)
	for i := range ids {
		if pairs[2*i] >= uint32(g.cfg.VocabSize) {
			return nil, nil, fmt.Errorf("decode candidates at position %d: candidate %d has id %d", g.pos-1, i, pairs[2*i])
		}
		ids[i], logits[i] = int(pairs[2*i]), math.Float32frombits(pairs[2*i+1])
	}
	return ids, logits, nil
}

// CandidateSteps is how many tokens DecodeCandidates has run through the on-device top-k (the
// step that reads back only candidates), so a caller can tell that path ran.
func (g *GPU) CandidateSteps() int {
	if g.cand == nil {
		return g.candSteps
	}
	return g.candSteps + g.cand.steps
}
