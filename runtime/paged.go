//go:build cgo

package runtime

import (
	"errors"
	"fmt"
	"sync"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
)

// PagedBlock is the number of positions in one block of a paged KV cache (PagedKV): the key tile
// of the attention kernels and the chunk of cpuref.Attention, so a tile is one block and a
// sequence's blocks are read in chunk order with the contiguous cache's arithmetic.
const PagedBlock = cpuref.AttentionChunk

// ErrKVFull is the error (wrapped) of a paged sequence that needs a block when the pool has none
// free; the sequence is unchanged.
var ErrKVFull = errors.New("KV cache pool full")

// PagedRefs locate a batched step's positions and block tables for the paged kernels (rope_kv,
// the fused q/k/v + RoPE GEMV, attention, attention_merge): Meta holds uint32 words, token t's
// position at word t and its sequence's block table — the pool block of positions 32c..32c+31 at
// entry c — at words TblOff + t*TblStride + c.
type PagedRefs struct {
	Meta      gpu.Range
	TblOff    uint32
	TblStride uint32
}

// push appends the paged push constants (paged flag, table offset, stride) and returns the meta
// binding: unused (a buffer the dispatch binds anyway) when p is nil.
func (p *PagedRefs) push(push []uint32, unused gpu.Range) ([]uint32, gpu.Range) {
	if p == nil {
		return append(push, 0, 0, 0), unused
	}
	return append(push, 1, p.TblOff, p.TblStride), p.Meta
}

// PagedBlockBytes is the device memory one block of a paged KV cache takes for cfg: K and V of
// PagedBlock positions in every layer, f16: 2 * layers * 32 * kv heads * head dim * 2 bytes
// (2B4T: 2.4 MiB, 76.8 KiB a position).
func PagedBlockBytes(cfg model.Config) uint64 {
	return 2 * uint64(cfg.Layers) * pagedLayerBlockBytes(cfg)
}

// pagedLayerBlockBytes is one layer's K (or V) share of a block: PagedBlock positions of
// kv heads * head dim f16 values.
func pagedLayerBlockBytes(cfg model.Config) uint64 {
	return PagedBlock * uint64(cfg.KVHeads*cfg.HeadDim) * 2
}

// PagedKV is a paged KV cache on the GPU backend, for serving many sequences on one copy of the
// weights: per layer one pool of blocks of PagedBlock positions for K and one for V
// ([blocks][32][kv heads][head dim] f16), a block table per sequence (PagedSeq), blocks taken
// from a free list as a sequence grows and returned when it is reset or closed — the layout of
// vLLM's PagedAttention (Kwon et al. 2023, "Efficient Memory Management for Large Language Model
// Serving with PagedAttention") with the block the size of bitgpu's attention chunk.
//
// Its step runs the forward pass of GPU over T tokens of up to T different sequences at once —
// every GEMV/GEMM over the T columns reads each weight once, RoPE, the KV store and attention use
// each token's own position and block table — and gives each token exactly the logits its
// sequence would get from a GPU (or cpuref.Backend) of its own: only the cache addresses change.
// A sequence's prefill runs through the same step (its tokens are the columns). The steps are
// recorded once per token count and replayed. LoRA adapters are not supported (NewPagedKV
// refuses them). Its methods and its sequences' are safe for concurrent use (one step runs at a
// time); the GPU must not be used for anything else meanwhile.
type PagedKV struct {
	mu      sync.Mutex // guards everything below and the sequences' fields; held during a step
	g       *GPU
	k, v    []*gpu.Buffer // per layer: the block pools
	blocks  int
	free    []uint32 // free block ids, taken from the end
	stride  int      // block-table entries per sequence: ceil(ctx/32)
	meta    *gpu.Buffer
	words   []uint32 // host staging of meta
	scratch *gpu.Buffer
	steps   map[int]*gpu.Sequence // recorded steps by token count
	seqs    map[*PagedSeq]bool
	closed  bool
}

// CheckPagedKV returns the error NewPagedKV would give for g and blocks before it allocates
// anything: a closed backend, blocks < 1, LoRA adapters loaded (the paged step does not apply
// them), or a layer's pool larger than one storage-buffer binding may cover on the device
// (maxStorageBufferRange: each layer's K and V pools are bound whole; the error names the most
// blocks and positions that fit).
func CheckPagedKV(g *GPU, blocks int) error {
	if g.closed {
		return errClosed
	}
	if blocks < 1 {
		return fmt.Errorf("paged KV cache: %d blocks (need at least 1)", blocks)
	}
	if g.lora != nil {
		return fmt.Errorf("paged KV cache: the batched step does not apply LoRA adapters")
	}
	block := pagedLayerBlockBytes(g.cfg)
	if lim := g.dev.Info().MaxStorageBufferRange; lim > 0 && uint64(blocks)*block > lim {
		most := lim / block
		return fmt.Errorf("paged KV cache of %d blocks (%d positions): a layer's pool of %s exceeds the %s one binding may cover on %s; at most %d blocks (%d positions)",
			blocks, blocks*PagedBlock, gpu.FormatBytes(uint64(blocks)*block), gpu.FormatBytes(lim), g.dev.Info().Name, most, most*PagedBlock)
	}
	return nil
}

// NewPagedKV allocates a paged KV cache of blocks blocks (PagedBlockBytes each) on g's device for
// sequences of up to g's context (GPUOptions.Ctx) tokens. Errors: those of CheckPagedKV, or the
// device memory (the error names the size).
func NewPagedKV(g *GPU, blocks int) (*PagedKV, error) {
	if err := CheckPagedKV(g, blocks); err != nil {
		return nil, err
	}
	c := g.cfg
	p := &PagedKV{g: g, blocks: blocks, stride: (g.ctx + PagedBlock - 1) / PagedBlock,
		steps: map[int]*gpu.Sequence{}, seqs: map[*PagedSeq]bool{}}
	pool := uint64(blocks) * pagedLayerBlockBytes(c)
	var err error
	alloc := func(bytes uint64) *gpu.Buffer {
		if err != nil {
			return nil
		}
		var b *gpu.Buffer
		if b, err = g.dev.NewBuffer(bytes); err != nil {
			err = fmt.Errorf("paged KV cache of %d blocks (%s): %w", blocks, gpu.FormatBytes(uint64(blocks)*PagedBlockBytes(c)), err)
		}
		return b
	}
	for range c.Layers {
		p.k = append(p.k, alloc(pool))
		p.v = append(p.v, alloc(pool))
	}
	p.scratch = alloc(max(4, PagedScratchBytes(uint32(c.Heads), uint32(c.HeadDim), uint32(g.ctx))))
	p.words = make([]uint32, MaxBatch+MaxBatch*p.stride)
	if err == nil {
		p.meta, err = g.dev.NewHostBuffer(4 * uint64(len(p.words)))
	}
	if err != nil {
		p.release()
		return nil, err
	}
	p.free = make([]uint32, blocks)
	for i := range p.free {
		p.free[i] = uint32(blocks - 1 - i) // block 0 is taken first
	}
	return p, nil
}

// Blocks reports the pool: blocks in use by sequences and the total.
func (p *PagedKV) Blocks() (used, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blocks - len(p.free), p.blocks
}

// BlockSize is the number of positions in a block (PagedBlock).
func (p *PagedKV) BlockSize() int { return PagedBlock }

// NewSequence returns an empty sequence of the cache; it takes blocks as it grows.
func (p *PagedKV) NewSequence() (*PagedSeq, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.g.closed {
		return nil, errClosed
	}
	s := &PagedSeq{kv: p}
	p.seqs[s] = true
	return s, nil
}

// Close frees the pools and the recorded steps; the sequences must not be used after. The GPU
// stays open.
func (p *PagedKV) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	for s := range p.seqs {
		s.closed = true
	}
	p.release()
	return nil
}

func (p *PagedKV) release() {
	for _, s := range p.steps {
		s.Release()
	}
	p.steps = nil
	for _, b := range append(append([]*gpu.Buffer{p.meta, p.scratch}, p.k...), p.v...) {
		if b != nil {
			b.Release()
		}
	}
	p.k, p.v, p.meta, p.scratch = nil, nil, nil, nil
}

// CanBatch reports whether s is an open sequence of p.
func (p *PagedKV) CanBatch(s Backend) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.canBatch(s)
}

func (p *PagedKV) canBatch(s Backend) bool {
	ps, ok := s.(*PagedSeq)
	return ok && ps.kv == p && !ps.closed
}

// pagedCol is one column of a step: a sequence, the position and the token there.
type pagedCol struct {
	seq   *PagedSeq
	pos   int
	token int
}

// DecodeBatch appends tokens[i] to seqs[i] (each a PagedSeq of p) and returns each sequence's
// logits, bit for bit what seqs[i].Decode(tokens[i]) returns (runtime.BatchDecoder). It runs
// ceil(len/MaxBatch) steps. Errors leave every sequence unchanged: no sequences, a length
// mismatch, a sequence not of p or given twice, a token outside the vocabulary, a full context
// or a pool without the blocks the step needs (ErrKVFull).
func (p *PagedKV) DecodeBatch(seqs []Backend, tokens []int) ([][]float32, error) {
	if len(seqs) != len(tokens) {
		return nil, fmt.Errorf("paged decode: %d sequences and %d tokens", len(seqs), len(tokens))
	}
	one := make([][]int, len(tokens))
	for i, t := range tokens {
		one[i] = []int{t}
	}
	return p.StepBatch(seqs, one)
}

// StepBatch appends tokens[i] (one or more: a prompt chunk or a decode token) to seqs[i] (each a
// PagedSeq of p) in one forward pass — ceil(total/MaxBatch) steps — and returns each sequence's
// last-token logits, bit for bit what seqs[i].Prefill(tokens[i], false) returns
// (runtime.StepBatcher). Errors leave every sequence unchanged, as DecodeBatch's, and an empty
// tokens[i].
func (p *PagedKV) StepBatch(seqs []Backend, tokens [][]int) ([][]float32, error) {
	if len(seqs) == 0 || len(seqs) != len(tokens) {
		return nil, fmt.Errorf("paged step: %d sequences and %d token lists", len(seqs), len(tokens))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var cols []pagedCol
	var want []bool
	seen := map[*PagedSeq]bool{}
	for i, b := range seqs {
		s, ok := b.(*PagedSeq)
		if !ok || !p.canBatch(s) {
			return nil, fmt.Errorf("paged step: sequence %d (%T) is not an open sequence of this cache", i, b)
		}
		if seen[s] {
			return nil, fmt.Errorf("paged step: sequence %d given twice", i)
		}
		if len(tokens[i]) == 0 {
			return nil, fmt.Errorf("paged step: sequence %d has no tokens", i)
		}
		if s.pos+len(tokens[i]) > p.g.ctx {
			return nil, fmt.Errorf("context full: sequence %d has %d tokens in the cache + %d new, over the context of %d tokens", i, s.pos, len(tokens[i]), p.g.ctx)
		}
		seen[s] = true
		for j, t := range tokens[i] {
			cols = append(cols, pagedCol{seq: s, pos: s.pos + j, token: t})
			want = append(want, j == len(tokens[i])-1)
		}
	}
	return p.run(cols, want)
}

// run (p.mu held) checks cols, takes the blocks they need (all or none), runs them in steps of at
// most MaxBatch columns and advances each sequence past its columns. It returns the logits of the
// columns want marks (nil: every column), in column order.
func (p *PagedKV) run(cols []pagedCol, want []bool) ([][]float32, error) {
	if p.closed || p.g.closed {
		return nil, errClosed
	}
	vocab := p.g.cfg.VocabSize
	need := map[*PagedSeq]int{} // positions each sequence will hold
	for i, c := range cols {
		if c.token < 0 || c.token >= vocab {
			return nil, fmt.Errorf("token %d (index %d) outside the vocabulary [0, %d)", c.token, i, vocab)
		}
		if c.pos >= p.g.ctx { // callers check whole chunks; this is the backstop
			return nil, fmt.Errorf("context full: position %d is past the context of %d tokens", c.pos, p.g.ctx)
		}
		need[c.seq] = max(need[c.seq], c.pos+1)
	}
	held := map[*PagedSeq]int{} // table lengths before take: a failed step gives the new blocks back
	for s := range need {
		held[s] = len(s.table)
	}
	if err := p.take(need); err != nil {
		return nil, err
	}
	untake := func() {
		for s, n := range held {
			for len(s.table) > n {
				p.free = append(p.free, s.table[len(s.table)-1])
				s.table = s.table[:len(s.table)-1]
			}
		}
	}
	var out [][]float32
	for start := 0; start < len(cols); start += MaxBatch {
		end := min(len(cols), start+MaxBatch)
		var w []bool
		if want != nil {
			w = want[start:end]
		}
		l, err := p.step(cols[start:end], w)
		if err != nil {
			untake()
			return nil, err
		}
		out = append(out, l...)
	}
	for s, n := range need {
		s.pos = n
	}
	return out, nil
}

// take gives every sequence of need the blocks for need[s] positions, all or none.
func (p *PagedKV) take(need map[*PagedSeq]int) error {
	want := 0
	for s, n := range need {
		want += max(0, (n+PagedBlock-1)/PagedBlock-len(s.table))
	}
	if want > len(p.free) {
		return fmt.Errorf("%w: the step needs %d more blocks of %d positions, %d of %d are free", ErrKVFull, want, PagedBlock, len(p.free), p.blocks)
	}
	for s, n := range need {
		for len(s.table) < (n+PagedBlock-1)/PagedBlock {
			s.table = append(s.table, p.free[len(p.free)-1])
			p.free = p.free[:len(p.free)-1]
		}
	}
	return nil
}

// step runs one recorded step over cols (at most MaxBatch) and returns the logits of the columns
// want marks (nil: all).
func (p *PagedKV) step(cols []pagedCol, want []bool) ([][]float32, error) {
	if pagedStepFault != nil {
		if err := pagedStepFault(len(cols)); err != nil {
			return nil, err
		}
	}
	g := p.g
	T := len(cols)
	tokens := make([]int, T)
	for t, c := range cols {
		tokens[t] = c.token
		p.words[t] = uint32(c.pos)
		copy(p.words[MaxBatch+t*p.stride:], c.seq.table[:c.pos/PagedBlock+1])
	}
	seq := p.steps[T]
	if seq == nil {
		var err error
		if seq, err = g.dev.NewSequence(); err != nil {
			return nil, err
		}
		refs := &PagedRefs{Meta: p.meta.Whole(), TblOff: MaxBatch, TblStride: uint32(p.stride)}
		if err := g.recordForwardOn(seq, uint32(T), nil, g.logits, &pagedStep{refs: refs, k: p.k, v: p.v, scratch: p.scratch.Whole()}); err != nil {
			seq.Release()
			return nil, err
		}
		p.steps[T] = seq
	}
	if err := g.embed(tokens); err != nil {
		return nil, err
	}
	if err := gpu.Write(p.meta, 0, p.words[:MaxBatch+T*p.stride]); err != nil {
		return nil, err
	}
	if err := seq.Submit(); err != nil {
		return nil, err
	}
	vocab := g.cfg.VocabSize
	var out [][]float32
	for t := range T {
		if want != nil && !want[t] {
			continue
		}
		l, err := gpu.Read[float32](g.logits, uint64(t*vocab), vocab)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// pagedStepFault, when not nil, is called before each step with its column count; an error it
// returns fails the step as a device error would (tests use it to reach the error paths).
var pagedStepFault func(cols int) error

// PagedSeq is one sequence of a PagedKV: its position and block table. It implements Backend
// (on the cache's GPU, one step per call) and BatchDecoder (its cache's DecodeBatch), so the
// serving engine batches the decode steps of the sequences of one cache.
type PagedSeq struct {
	kv     *PagedKV
	table  []uint32 // pool block of positions 32c..32c+31
	pos    int
	closed bool
}

// Config returns the model hyper-parameters.
func (s *PagedSeq) Config() model.Config { return s.kv.g.cfg }

// Pos is the number of tokens in the sequence's cache.
func (s *PagedSeq) Pos() int {
	s.kv.mu.Lock()
	defer s.kv.mu.Unlock()
	return s.pos
}

// Blocks is the number of pool blocks the sequence holds.
func (s *PagedSeq) Blocks() int {
	s.kv.mu.Lock()
	defer s.kv.mu.Unlock()
	return len(s.table)
}

// Prefill appends tokens at Pos().. in steps of up to MaxBatch tokens and returns the logits of
// every token (allLogits) or of the last. Errors leave the sequence unchanged: no tokens, a token
// outside the vocabulary, a full context, or no free blocks (ErrKVFull).
func (s *PagedSeq) Prefill(tokens []int, allLogits bool) ([]float32, error) {
	s.kv.mu.Lock()
	defer s.kv.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("no tokens")
	}
	if s.pos+len(tokens) > s.kv.g.ctx {
		return nil, fmt.Errorf("context full: %d tokens in the cache + %d new, over the context of %d tokens", s.pos, len(tokens), s.kv.g.ctx)
	}
	cols := make([]pagedCol, len(tokens))
	var want []bool // nil: every token's logits
	if !allLogits {
		want = make([]bool, len(tokens))
		want[len(want)-1] = true
	}
	for i, t := range tokens {
		cols[i] = pagedCol{seq: s, pos: s.pos + i, token: t}
	}
	rows, err := s.kv.run(cols, want)
	if err != nil {
		return nil, err
	}
	var out []float32
	for _, r := range rows {
		out = append(out, r...)
	}
	return out, nil
}

// Decode appends one token and returns its logits.
func (s *PagedSeq) Decode(token int) ([]float32, error) { return s.Prefill([]int{token}, false) }

// Reset empties the sequence and returns its blocks to the pool.
func (s *PagedSeq) Reset() {
	s.kv.mu.Lock()
	defer s.kv.mu.Unlock()
	s.reset()
}

func (s *PagedSeq) reset() {
	s.pos = 0
	if !s.kv.closed {
		for i := len(s.table) - 1; i >= 0; i-- {
			s.kv.free = append(s.kv.free, s.table[i])
		}
	}
	s.table = nil
}

// Close returns the sequence's blocks to the pool; the sequence must not be used after.
func (s *PagedSeq) Close() error {
	s.kv.mu.Lock()
	defer s.kv.mu.Unlock()
	if s.closed {
		return nil
	}
	s.reset()
	s.closed = true
	delete(s.kv.seqs, s)
	return nil
}

// CanBatch reports whether o is an open sequence of the same cache.
func (s *PagedSeq) CanBatch(o Backend) bool { return s.kv.CanBatch(o) }

// DecodeBatch is the cache's DecodeBatch (PagedKV.DecodeBatch).
func (s *PagedSeq) DecodeBatch(seqs []Backend, tokens []int) ([][]float32, error) {
	return s.kv.DecodeBatch(seqs, tokens)
}

// StepBatch is the cache's StepBatch (PagedKV.StepBatch).
func (s *PagedSeq) StepBatch(seqs []Backend, tokens [][]int) ([][]float32, error) {
	return s.kv.StepBatch(seqs, tokens)
}
