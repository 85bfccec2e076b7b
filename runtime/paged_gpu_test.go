//go:build cgo

package runtime

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/model"
)

// pagedPrompt is a prompt of n tokens that differs per seed.
func pagedPrompt(n, seed, vocab int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = (seed*131 + i*17 + 1) % vocab
	}
	return p
}

// newPaged opens m on the test device with a context of ctx tokens and a paged KV cache of blocks
// blocks on it; both are closed (the cache first) when the test ends.
func newPaged(t *testing.T, m *model.Model, ctx, blocks int) (*GPU, *PagedKV) {
	t.Helper()
	g, err := NewGPU(gputest.Open(t), m, GPUOptions{Ctx: ctx})
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	kv, err := NewPagedKV(g, blocks)
	require.NoError(t, err)
	t.Cleanup(func() { kv.Close() })
	return g, kv
}

// requireBlocks requires kv's used blocks to be exactly those the sequences' positions need.
func requireBlocks(t *testing.T, kv *PagedKV, seqs []*PagedSeq) {
	t.Helper()
	want := 0
	for _, s := range seqs {
		if s != nil {
			require.Equal(t, (s.Pos()+PagedBlock-1)/PagedBlock, s.Blocks(), "blocks of a sequence at %d", s.Pos())
			want += s.Blocks()
		}
	}
	used, _ := kv.Blocks()
	require.Equal(t, want, used)
}

// TestPagedKVMatchesCPU: sequences of one paged KV cache, prefilled one by one (prompts inside one
// block, across blocks and across MaxBatch chunks) and then decoded together in batched steps whose
// membership changes every round, give each sequence the CPU reference's logits for that sequence
// alone, bit for bit. A sequence closed half way returns its blocks, and a new one that reuses them
// (their stale keys still in the pool) is exact too. ctx 600 makes the step split the key range on
// every device (the merge pass reads the positions from the block tables), ctx 128 folds in
// registers on the CPU drivers and splits on GPUs; F16 projections take the separate rope_kv path, ternary ones the fused q/k/v GEMV.
func TestPagedKVMatchesCPU(t *testing.T) {
	for _, tc := range []struct {
		typ model.TensorType
		ctx int
	}{{model.TypeI2_S, 600}, {model.TypeTQ2_0, 128}, {model.TypeF16, 128}} {
		t.Run(fmt.Sprintf("%v/ctx%d", tc.typ, tc.ctx), func(t *testing.T) {
			m := synthModel(t, tc.typ, func(o *model.SynthOptions) { o.Layers, o.Ctx = 2, 1024 })
			vocab := m.Config.VocabSize
			_, kv := newPaged(t, m, tc.ctx, 16)
			var err error

			lens := []int{5, 37, 1, 70}
			seqs := make([]*PagedSeq, len(lens))
			refs := make([]*cpuref.Backend, len(lens))
			next := make([]int, len(lens))
			open := func(i, seed int) {
				seqs[i], err = kv.NewSequence()
				require.NoError(t, err)
				refs[i], err = cpuref.New(m, tc.ctx)
				require.NoError(t, err)
				prompt := pagedPrompt(lens[i], seed, vocab)
				want, err := refs[i].Prefill(prompt, true)
				require.NoError(t, err)
				got, err := seqs[i].Prefill(prompt, true)
				require.NoError(t, err)
				requireLogitsEqual(t, want, got, vocab, fmt.Sprintf("prefill of sequence %d", i))
				next[i] = cpuref.Argmax(want[len(want)-vocab:])
			}
			for i := range lens {
				open(i, i)
			}
			requireBlocks(t, kv, seqs)
			for round := range 40 {
				if round == 20 { // sequence 1 leaves, another (new prompt) takes its blocks
					require.NoError(t, seqs[1].Close())
					seqs[1] = nil
					requireBlocks(t, kv, seqs)
					lens[1] = 33
					open(1, 9)
				}
				var batch []Backend
				var toks, idx []int
				for i, s := range seqs {
					if (round+i)%3 != 0 || round%5 == 4 { // membership changes; every fifth round all
						batch, toks, idx = append(batch, s), append(toks, next[i]), append(idx, i)
					}
				}
				got, err := kv.DecodeBatch(batch, toks)
				require.NoError(t, err)
				for j, i := range idx {
					want, err := refs[i].Decode(next[i])
					require.NoError(t, err)
					requireLogitsEqual(t, want, got[j], vocab, fmt.Sprintf("round %d, sequence %d at %d", round, i, seqs[i].Pos()-1))
					require.Equal(t, refs[i].Pos(), seqs[i].Pos())
					next[i] = cpuref.Argmax(want)
				}
			}
			requireBlocks(t, kv, seqs)

			// Chunked prefill: a new sequence's 70-token prompt in the same StepBatch as the
			// others' decode tokens (two recorded steps of at most 64 columns).
			xs, err := kv.NewSequence()
			require.NoError(t, err)
			xr, err := cpuref.New(m, tc.ctx)
			require.NoError(t, err)
			prompt := pagedPrompt(70, 5, vocab)
			want, err := xr.Prefill(prompt, false)
			require.NoError(t, err)
			batch, toks := []Backend{seqs[0], xs, seqs[2]}, [][]int{{next[0]}, prompt, {next[2]}}
			got, err := kv.StepBatch(batch, toks)
			require.NoError(t, err)
			require.Len(t, got, 3)
			requireLogitsEqual(t, want, got[1], vocab, "prefill inside a batched step")
			for j, i := range []int{0, 2} {
				want, err := refs[i].Decode(next[i])
				require.NoError(t, err)
				requireLogitsEqual(t, want, got[2*j], vocab, fmt.Sprintf("decode of sequence %d beside a prefill", i))
			}
			require.Equal(t, 70, xs.Pos())
			requireBlocks(t, kv, append(seqs, xs))
		})
	}
}

// TestPagedKVErrorsChangeNothing: a step the pool has no blocks for fails with ErrKVFull, as do a
// bad token, a full context, a foreign or repeated sequence — each leaving positions and blocks
// as they were; the sequence then still decodes exactly.
func TestPagedKVErrorsChangeNothing(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, func(o *model.SynthOptions) { o.Layers = 1 })
	g, kv := newPaged(t, m, 96, 2)
	_, err := NewPagedKV(g, 0)
	require.ErrorContains(t, err, "0 blocks")

	a, err := kv.NewSequence()
	require.NoError(t, err)
	b, err := kv.NewSequence()
	require.NoError(t, err)
	ref, err := cpuref.New(m, 96)
	require.NoError(t, err)
	prompt := pagedPrompt(40, 1, m.Config.VocabSize)
	want, err := ref.Prefill(prompt, false)
	require.NoError(t, err)
	got, err := a.Prefill(prompt, false)
	require.NoError(t, err)
	requireLogitsEqual(t, want, got, m.Config.VocabSize, "prefill")

	_, err = b.Prefill(pagedPrompt(33, 2, m.Config.VocabSize), false) // 2 blocks, 0 free
	require.ErrorIs(t, err, ErrKVFull)
	require.ErrorContains(t, err, "needs 2 more blocks of 32 positions, 0 of 2 are free")
	_, err = kv.DecodeBatch([]Backend{a, a}, []int{1, 2})
	require.ErrorContains(t, err, "given twice")
	_, err = kv.DecodeBatch([]Backend{a, ref}, []int{1, 2})
	require.ErrorContains(t, err, "not an open sequence")
	_, err = kv.DecodeBatch([]Backend{a}, []int{m.Config.VocabSize})
	require.ErrorContains(t, err, "outside the vocabulary")
	_, err = a.Prefill(make([]int, 57), false)
	require.ErrorContains(t, err, "context full")
	require.Equal(t, 40, a.Pos())
	require.Equal(t, 0, b.Pos())
	requireBlocks(t, kv, []*PagedSeq{a, b})

	require.NoError(t, b.Close())
	_, err = kv.DecodeBatch([]Backend{b}, []int{1})
	require.ErrorContains(t, err, "not an open sequence")
	tok := cpuref.Argmax(want)
	want, err = ref.Decode(tok)
	require.NoError(t, err)
	rows, err := kv.DecodeBatch([]Backend{a}, []int{tok})
	require.NoError(t, err)
	requireLogitsEqual(t, want, rows[0], m.Config.VocabSize, "decode after the errors")
	a.Reset()
	used, total := kv.Blocks()
	require.Equal(t, [2]int{0, 2}, [2]int{used, total})
}

// BenchmarkPagedDecodeBatch: one batched decode step of B paged sequences of the built-in model
// on the test device, B = 1, 2, 4, 8, 16, each sequence 64 tokens in; tokens/s and the weight
// bytes each token reads (the model's projections and head once per step, over B) come from one
// run, so the batching gain reads as the ratio of the tokens/s of two widths.
func BenchmarkPagedDecodeBatch(b *testing.B) {
	m, err := assets.Open()
	require.NoError(b, err)
	defer m.Close()
	g, err := NewGPU(gputest.Open(b), m, GPUOptions{Ctx: 256})
	require.NoError(b, err)
	defer g.Close()
	kv, err := NewPagedKV(g, 16*8)
	require.NoError(b, err)
	defer kv.Close()
	db := DecodeBytesOf(m.Config, false, g.head)
	weights := db.Weights + db.Head
	for _, B := range []int{1, 2, 4, 8, 16} {
		b.Run(fmt.Sprintf("B=%d", B), func(b *testing.B) {
			seqs := make([]Backend, B)
			toks := make([]int, B)
			for i := range seqs {
				s, err := kv.NewSequence()
				require.NoError(b, err)
				defer s.Close()
				_, err = s.Prefill(pagedPrompt(64, i, m.Config.VocabSize), false)
				require.NoError(b, err)
				seqs[i], toks[i] = s, 5
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if seqs[0].Pos() == g.ctx {
					b.StopTimer()
					for _, s := range seqs {
						s.Reset()
						_, err := s.Prefill(pagedPrompt(64, 1, m.Config.VocabSize), false)
						require.NoError(b, err)
					}
					b.StartTimer()
				}
				_, err := kv.DecodeBatch(seqs, toks)
				require.NoError(b, err)
			}
			b.ReportMetric(float64(B*b.N)/b.Elapsed().Seconds(), "tokens/s")
			b.ReportMetric(float64(weights)/float64(B), "weight-bytes/token")
		})
	}
}

// TestDropOwnCache: DropOwnCache gives back exactly the backend's own KV cache (the plan's
// KVCache bytes, counted by the device), its own forward passes then fail with one clear error
// and change nothing, and the paged sequences still decode exactly.
func TestDropOwnCache(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, func(o *model.SynthOptions) { o.Layers = 1 })
	dev := gputest.Open(t)
	g, err := NewGPU(dev, m, GPUOptions{Ctx: 96})
	require.NoError(t, err)
	defer g.Close()
	_, err = g.Decode(1) // the own cache in use, then dropped
	require.NoError(t, err)
	kv, err := NewPagedKV(g, 4)
	require.NoError(t, err)
	defer kv.Close()
	own := g.Plan().KVCache
	require.Equal(t, uint64(2*96*m.Config.KVHeads*m.Config.HeadDim*2), own)
	before := dev.Live()
	g.DropOwnCache()
	require.Equal(t, before.BufferBytes-own, dev.Live().BufferBytes)
	require.Zero(t, g.Plan().KVCache)
	for _, f := range []func() error{
		func() error { _, err := g.Decode(1); return err },
		func() error { _, err := g.Prefill([]int{1, 2}, false); return err },
		func() error { _, err := g.DecodeGreedy(1); return err },
		g.EnableProfile,
	} {
		require.ErrorIs(t, f(), errNoOwnCache)
	}
	require.Equal(t, 1, g.Pos())
	g.DropOwnCache() // twice: nothing more

	s, err := kv.NewSequence()
	require.NoError(t, err)
	ref, err := cpuref.New(m, 96)
	require.NoError(t, err)
	prompt := pagedPrompt(9, 3, m.Config.VocabSize)
	want, err := ref.Prefill(prompt, true)
	require.NoError(t, err)
	got, err := s.Prefill(prompt, true)
	require.NoError(t, err)
	requireLogitsEqual(t, want, got, m.Config.VocabSize, "paged prefill after DropOwnCache")
}

// TestPagedKVLimitsAndFailures: a pool whose layer buffer would exceed the device's
// maxStorageBufferRange is refused before anything is allocated, naming the most blocks that fit;
// a step that fails on the device (here: the GPU closed under the cache) returns an error — never
// a panic — and gives back the blocks it took.
func TestPagedKVLimitsAndFailures(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, func(o *model.SynthOptions) { o.Layers = 1 })
	dev := gputest.Open(t)
	g, err := NewGPU(dev, m, GPUOptions{Ctx: 96})
	require.NoError(t, err)
	defer g.Close()
	block := uint64(PagedBlock * m.Config.KVHeads * m.Config.HeadDim * 2) // spelled out, not pagedLayerBlockBytes
	most := dev.Info().MaxStorageBufferRange / block
	before := dev.Live()
	_, err = NewPagedKV(g, int(most)+1)
	require.ErrorContains(t, err, fmt.Sprintf("at most %d blocks (%d positions)", most, most*PagedBlock))
	require.Equal(t, before, dev.Live(), "nothing allocated")
	require.NoError(t, CheckPagedKV(g, int(most)))

	kv, err := NewPagedKV(g, 4)
	require.NoError(t, err)
	a, err := kv.NewSequence()
	require.NoError(t, err)
	_, err = a.Prefill([]int{1, 2, 3}, false) // records the 3-column step
	require.NoError(t, err)
	// A failure in the second step of a 70-token prefill (64 + 6 columns): the 2 blocks the
	// prefill took go back, the sequence stays at 3 tokens in 1 block.
	pagedStepFault = func(cols int) error {
		if cols == 6 {
			return fmt.Errorf("injected device error")
		}
		return nil
	}
	_, err = a.Prefill(pagedPrompt(70, 2, m.Config.VocabSize), false)
	pagedStepFault = nil
	require.ErrorContains(t, err, "injected device error")
	require.Equal(t, 3, a.Pos())
	require.Equal(t, 1, a.Blocks())
	used, _ := kv.Blocks()
	require.Equal(t, 1, used)
	require.NoError(t, g.Close())
	for _, n := range []int{1, 3, 40} { // a recorded width, a new one, two blocks' worth
		_, err = a.Prefill(pagedPrompt(n, 1, m.Config.VocabSize), false)
		require.ErrorIs(t, err, errClosed)
	}
	require.Equal(t, 3, a.Pos())
	require.Equal(t, 1, a.Blocks())
	used, _ = kv.Blocks()
	require.Equal(t, 1, used)
	_, err = kv.NewSequence()
	require.ErrorIs(t, err, errClosed)
	require.NoError(t, kv.Close())
}

// TestPagedKVFamilies: every synthetic family (sub-norms or none, NEOX or NORM RoPE, ReLU² or
// SiLU, tied or separate output) gives cpuref's logits per sequence through the paged step:
// three sequences prefilled, then decoded together for 5 rounds.
func TestPagedKVFamilies(t *testing.T) {
	for _, fam := range model.SynthFamilies {
		t.Run(fam, func(t *testing.T) {
			m := synthModel(t, model.TypeI2_S, func(o *model.SynthOptions) { o.Family = fam; o.Layers = 1 })
			vocab := m.Config.VocabSize
			_, kv := newPaged(t, m, 64, 8)
			var seqs []Backend
			var refs []*cpuref.Backend
			var next []int
			for i, n := range []int{3, 33, 9} {
				s, err := kv.NewSequence()
				require.NoError(t, err)
				r, err := cpuref.New(m, 64)
				require.NoError(t, err)
				prompt := pagedPrompt(n, i, vocab)
				want, err := r.Prefill(prompt, false)
				require.NoError(t, err)
				got, err := s.Prefill(prompt, false)
				require.NoError(t, err)
				requireLogitsEqual(t, want, got, vocab, fmt.Sprintf("prefill %d", i))
				seqs, refs, next = append(seqs, s), append(refs, r), append(next, cpuref.Argmax(want))
			}
			for round := range 5 {
				got, err := kv.DecodeBatch(seqs, next)
				require.NoError(t, err)
				for i := range seqs {
					want, err := refs[i].Decode(next[i])
					require.NoError(t, err)
					requireLogitsEqual(t, want, got[i], vocab, fmt.Sprintf("round %d, sequence %d", round, i))
					next[i] = cpuref.Argmax(want)
				}
			}
		})
	}
}
