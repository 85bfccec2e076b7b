package cpu

import (
	"fmt"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// SharesWeights reports whether s runs on b's weights and worker pool — b itself, the Backend b
// was made from by NewSequence, or another sequence made from the same one — so that DecodeBatch
// can step them together. It is false when either is closed or nil.
func (b *Backend) SharesWeights(s *Backend) bool {
	return b != nil && s != nil && !b.closed && !s.closed && s.eng.pool == b.eng.pool &&
		len(b.layers) > 0 && len(s.layers) == len(b.layers) && &s.layers[0] == &b.layers[0]
}

// DecodeBatch runs one decode step of each of B = len(seqs) sequences in one forward pass:
// seqs[i] appends tokens[i] at its own position seqs[i].Pos(). Every matrix product is one GEMM
// over the B tokens (each weight read once for all of them); RoPE, the KV store, attention over
// each sequence's own cache and the LoRA terms at each sequence's own scales (SetLoRAScales) are
// per token. It returns B rows of VocabSize logits, row i seqs[i]'s — bit for bit what
// seqs[i].Decode(tokens[i]) alone returns (the README's bit-exact contract: no token's arithmetic
// depends on the others), so the grouping never changes a sequence's tokens.
//
// b runs the step with its scratch and worker pool; every sequence must share b's weights
// (SharesWeights; b may be one of them). It returns an error, leaving every sequence's Pos()
// unchanged, for no sequences, len(tokens) != len(seqs), a nil, closed or foreign sequence, one
// sequence twice, a token outside [0, VocabSize), a full cache, or a closed b; errors name the
// sequence's index.
func (b *Backend) DecodeBatch(seqs []*Backend, tokens []int) ([][]float32, error) {
	switch {
	case b.closed:
		return nil, fmt.Errorf("cpu: backend is closed")
	case len(seqs) == 0:
		return nil, fmt.Errorf("cpu: DecodeBatch: no sequences")
	case len(tokens) != len(seqs):
		return nil, fmt.Errorf("cpu: DecodeBatch: %d tokens for %d sequences", len(tokens), len(seqs))
	}
	for i, s := range seqs {
		if s == nil {
			return nil, fmt.Errorf("cpu: DecodeBatch: sequence %d is nil", i)
		}
		if err := cpuref.CheckStep(s.closed, s.pos, s.ctx, s.cfg.VocabSize, tokens[i:i+1]); err != nil {
			return nil, fmt.Errorf("cpu: DecodeBatch: sequence %d: %w", i, err)
		}
		if !b.SharesWeights(s) {
			return nil, fmt.Errorf("cpu: DecodeBatch: sequence %d does not share this backend's weights (make it with NewSequence)", i)
		}
		for j := range i {
			if seqs[j] == s {
				return nil, fmt.Errorf("cpu: DecodeBatch: sequences %d and %d are the same", j, i)
			}
		}
	}
	vocab := b.cfg.VocabSize
	logits := make([]float32, len(seqs)*vocab)
	err := model.CatchFault(func() error {
		for c0 := 0; c0 < len(seqs); c0 += prefillChunk {
			c1 := min(c0+prefillChunk, len(seqs))
			at := make([]place, c1-c0)
			for i := range at {
				at[i] = place{seq: seqs[c0+i], pos: seqs[c0+i].pos}
			}
			if err := b.forward(tokens[c0:c1], at, logits[c0*vocab:c1*vocab], true); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	rows := make([][]float32, len(seqs))
	for i, s := range seqs {
		s.pos++
		rows[i] = logits[i*vocab : (i+1)*vocab : (i+1)*vocab]
	}
	return rows, nil
}
