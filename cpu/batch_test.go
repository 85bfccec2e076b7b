package cpu

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// batchRig is a parent Backend, sequences made from it (the parent first), and for each a cpuref
// Backend fed the same tokens — the oracle of that sequence alone — with the last logits of both.
type batchRig struct {
	seqs []*Backend
	refs []*cpuref.Backend
	last [][]float32 // per sequence, the logits its next token is chosen from
}

// newBatchRig opens the parent with LM head h and opts and n-1 sequences, sets sequence i's LoRA
// scales to scales[i] (when there are adapters), and prefills sequence i with the first 2+3i
// tokens of prompt (so their positions differ), checking the prefill against cpuref's.
func newBatchRig(t *testing.T, m *model.Model, n int, h cpuref.LMHead, ads []cpuref.Adapter, scales [][]float32, opts ...Option) *batchRig {
	t.Helper()
	parent, err := New(m, 0, append(opts, WithLoRA(ads...), WithLMHead(h))...)
	require.NoError(t, err)
	r := &batchRig{seqs: []*Backend{parent}}
	for range n - 1 {
		s, err := parent.NewSequence()
		require.NoError(t, err)
		r.seqs = append(r.seqs, s)
	}
	t.Cleanup(func() {
		for _, s := range r.seqs[1:] {
			s.Close()
		}
		parent.Close()
		for _, ref := range r.refs {
			ref.Close()
		}
	})
	vocab := m.Config.VocabSize
	long := append(append([]int{}, prompt...), prompt...)
	long = append(long, long...)
	for i, s := range r.seqs {
		ref, err := cpuref.New(m, 0, cpuref.WithLoRA(ads...), cpuref.WithLMHead(h))
		require.NoError(t, err)
		r.refs = append(r.refs, ref)
		if len(ads) > 0 {
			require.NoError(t, s.SetLoRAScales(scales[i]))
			require.NoError(t, ref.SetLoRAScales(scales[i]))
		}
		toks := long[:2+3*i]
		want, err := ref.Prefill(toks, false)
		require.NoError(t, err)
		got, err := s.Prefill(toks, false)
		require.NoError(t, err)
		requireBits(t, want, got, fmt.Sprintf("sequence %d prefill", i))
		r.last = append(r.last, want[len(want)-vocab:])
	}
	return r
}

// step decodes one greedy token of each sequence in idx with one DecodeBatch call (run by the
// parent) and requires each row to be, bit for bit, what cpuref's Decode of that sequence alone
// returns; positions advance by one for the batch's sequences only.
func (r *batchRig) step(t *testing.T, idx []int, msg string) {
	t.Helper()
	seqs := make([]*Backend, len(idx))
	toks := make([]int, len(idx))
	before := make([]int, len(r.seqs))
	for i, s := range r.seqs {
		before[i] = s.Pos()
	}
	for j, i := range idx {
		seqs[j], toks[j] = r.seqs[i], cpuref.Argmax(r.last[i])
	}
	rows, err := r.seqs[0].DecodeBatch(seqs, toks)
	require.NoError(t, err, msg)
	require.Len(t, rows, len(idx), msg)
	for j, i := range idx {
		want, err := r.refs[i].Decode(toks[j])
		require.NoError(t, err)
		requireBits(t, want, rows[j], fmt.Sprintf("%s: batch %v, row %d (sequence %d at position %d)", msg, idx, j, i, before[i]))
		r.last[i] = rows[j]
		before[i]++
	}
	for i, s := range r.seqs {
		require.Equal(t, before[i], s.Pos(), "%s: sequence %d's position", msg, i)
	}
}

// batches are the groupings TestDecodeBatchParity steps through: B = 1..5, in and out of order,
// the parent in some and not others, every sequence at a different position.
var batches = [][]int{{0}, {0, 1}, {2, 1, 0}, {1, 2, 3, 4}, {0, 1, 2, 3, 4}, {3}, {4, 0, 2}, {1, 3}, {0, 1, 2, 3, 4}}

// TestDecodeBatchParity: for every family, with two LoRA adapters at different scales for each
// sequence (one off, both off, negative), every kernel at 1 thread with the F16 head and at 2
// with the Q8_0 head, one DecodeBatch over B = 1..5 sequences at different positions gives each
// sequence cpuref's Decode logits for that sequence alone, bit for bit, and advances exactly
// those sequences.
func TestDecodeBatchParity(t *testing.T) {
	for _, fam := range model.SynthFamilies {
		t.Run(fam, func(t *testing.T) {
			m := synth(t, model.SynthOptions{Family: fam, Vocab: 300, Dim: 256, Layers: 2, Heads: 4, KVHeads: 2,
				FFN: 512, Ctx: 64, Type: model.TypeTQ2_0, BlockScales: true, Seed: 17})
			l1, err := model.SynthLoRA(m.Config, 5, 10, 1, 1, nil)
			require.NoError(t, err)
			l2, err := model.SynthLoRA(m.Config, 8, 16, 1, 2, []string{"attn_q", "attn_k", "attn_v", "attn_output"})
			require.NoError(t, err)
			ads := []cpuref.Adapter{{LoRA: l1, Scale: 1}, {LoRA: l2, Scale: 0.5}}
			scales := [][]float32{{1, 0.5}, {0, 2}, {0, 0}, {-1, 0}, {0.25, 1}}
			for _, k := range kernels() {
				for _, threads := range []int{1, 2} {
					h := cpuref.LMHeadF16
					if threads == 2 {
						h = cpuref.LMHeadQ8_0
					}
					r := newBatchRig(t, m, 5, h, ads, scales, WithKernel(k), WithThreads(threads))
					for si, idx := range batches {
						r.step(t, idx, fmt.Sprintf("kernel %s, %d threads, %s head, step %d", k, threads, h, si))
					}
				}
			}
		})
	}
}

// TestDecodeBatchWide: a batch wider than a forward pass's chunk (prefillChunk tokens) runs in
// chunks, still each sequence's own logits; without adapters, with the Q8_0 head.
func TestDecodeBatchWide(t *testing.T) {
	m := synth(t, model.SynthOptions{Vocab: 300, Dim: 128, Layers: 1, Heads: 2, KVHeads: 1, FFN: 256, Ctx: 8, Seed: 3})
	n := prefillChunk + 6
	r := newBatchRig(t, m, 1, cpuref.LMHeadQ8_0, nil, nil)
	for range n - 1 {
		s, err := r.seqs[0].NewSequence()
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		ref, err := cpuref.New(m, 0, cpuref.WithLMHead(cpuref.LMHeadQ8_0))
		require.NoError(t, err)
		tok := []int{1, len(r.seqs)}
		want, err := ref.Prefill(tok, false)
		require.NoError(t, err)
		_, err = s.Prefill(tok, false)
		require.NoError(t, err)
		r.seqs, r.refs, r.last = append(r.seqs, s), append(r.refs, ref), append(r.last, want)
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = n - 1 - i
	}
	r.step(t, idx, "wide")
	r.step(t, idx[:prefillChunk+1], "chunk+1")
}

// TestDecodeBatchErrors: a bad batch is an error naming the sequence, and leaves every sequence
// where it was (a later good batch still gives cpuref's logits).
func TestDecodeBatchErrors(t *testing.T) {
	m := synth(t, model.SynthOptions{Vocab: 300, Dim: 128, Layers: 1, Heads: 2, KVHeads: 1, FFN: 256, Ctx: 16, Seed: 1})
	r := newBatchRig(t, m, 3, "", nil, nil)
	p, s1, s2 := r.seqs[0], r.seqs[1], r.seqs[2]
	other, err := New(m, 0)
	require.NoError(t, err)
	defer other.Close()
	closed, err := p.NewSequence()
	require.NoError(t, err)
	require.NoError(t, closed.Close())
	full, err := p.NewSequence()
	require.NoError(t, err)
	defer full.Close()
	_, err = full.Prefill(make([]int, 16), false)
	require.NoError(t, err)

	for _, c := range []struct {
		seqs []*Backend
		toks []int
		want string
	}{
		{nil, nil, "no sequences"},
		{[]*Backend{p, s1}, []int{1}, "1 tokens for 2 sequences"},
		{[]*Backend{p, nil}, []int{1, 2}, "sequence 1 is nil"},
		{[]*Backend{p, s1, other}, []int{1, 2, 3}, "sequence 2 does not share"},
		{[]*Backend{s2, p, s2}, []int{1, 2, 3}, "sequences 0 and 2 are the same"},
		{[]*Backend{p, s1}, []int{1, 300}, "sequence 1: token 300 (index 0) outside the vocabulary"},
		{[]*Backend{p, s1}, []int{1, -1}, "sequence 1: token -1 (index 0) outside the vocabulary"},
		{[]*Backend{full, s1}, []int{1, 2}, "sequence 0: 1 tokens at position 16 exceed the context length 16"},
		{[]*Backend{p, closed}, []int{1, 2}, "sequence 1: backend is closed"},
	} {
		_, err := p.DecodeBatch(c.seqs, c.toks)
		require.ErrorContains(t, err, c.want)
		require.Equal(t, []int{2, 5, 8}, []int{p.Pos(), s1.Pos(), s2.Pos()}, c.want)
	}
	_, err = other.DecodeBatch([]*Backend{other}, []int{1})
	require.NoError(t, err, "a backend of its own is a batch of itself")
	require.True(t, s1.SharesWeights(p) && p.SharesWeights(s2) && s1.SharesWeights(s2))
	require.False(t, p.SharesWeights(other) || p.SharesWeights(closed) || p.SharesWeights(nil))
	r.step(t, []int{2, 0, 1}, "after the errors")
	_, err = closed.DecodeBatch([]*Backend{p}, []int{1})
	require.ErrorContains(t, err, "backend is closed")
}
