// Package serve is bitgpu's serving engine: it runs many generation requests at once over a fixed
// set of sequence slots, each slot a runtime.Backend with its own KV cache, without any HTTP (the
// OpenAI-compatible server in package runtime/serve/httpapi is a thin layer over it).
//
// Scheduling. A request waits in a bounded FIFO queue until a slot is free, then runs
// runtime.Generate (the same loop as `bitgpu generate`: sampler, stop strings, end of text) on
// that slot's backend. Every forward pass of every active sequence goes through one scheduler
// goroutine, which works in rounds: each round takes the steps that are pending — at most one per
// active sequence, a decode step of one token or a prefill chunk of at most PrefillChunk prompt
// tokens. New requests join between rounds and finished or cancelled ones leave, so a long
// prompt is prefilled in chunks interleaved with the other sequences' decode steps.
//
// Continuous batching. The decode steps of a round run as ONE batched forward pass
// (runtime.BatchDecoder: one token of each sequence, every weight read once for all of them,
// RoPE, KV store, attention and LoRA per sequence) over the slots whose backends batch together
// — on the fast CPU backend, the slots made by NewSequence from one parent; on the GPU, the
// sequences of one paged KV cache, whose batched pass (runtime.StepBatcher) also takes the
// round's prompt chunks (chunked prefill: new requests prefill in the same pass as the others'
// decode steps). Other prompt chunks, and every step of backends without a batched step
// (cpuref), run one sequence at a time in slot order. So that the sequences' steps meet in one round, the scheduler waits,
// up to Options.BatchWait, for each sequence of the previous round to post its next step (or
// leave) before it starts the next round; a sequence that takes longer (a slow client) joins a
// later round. Stats counts the batched steps and their tokens.
//
// Batch invariance holds exactly: a sequence's forward passes read only its own KV cache, and
// every backend computes the same bits whatever the grouping of tokens — prompt tokens into
// Prefill calls, sequences into a batched step (the README's bit-exact contract) — so a
// request's tokens, greedy or seeded, are the same alone or alongside others, and greedy ones
// equal `bitgpu generate`'s.
//
// Paged KV cache. With Options.KVPool (the GPU's runtime.PagedKV, whose sequences are the slots)
// the slots share one pool of blocks of 32 positions: a sequence takes blocks as it grows and
// gives them back when its request ends. Admission reserves the blocks a request can ever need —
// ceil(min(prompt + max_tokens, context) / 32), the whole context when max_tokens is not set — so
// the pool never runs dry in the middle of a stream (no preemption is needed); a request waits in
// the queue, in order, until both a slot and its blocks are free, and a prompt that needs more
// blocks than the pool holds is a *PromptTooLongError naming the pool's size in tokens. Without a
// pool every slot owns a whole context's cache.
package serve

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// DefaultQueue is the most requests that wait for a slot when Options.Queue is 0.
const DefaultQueue = 64

// DefaultPrefillChunk is the most prompt tokens one scheduler step prefills when
// Options.PrefillChunk is 0.
const DefaultPrefillChunk = 64

// DefaultBatchWait is Options.BatchWait's default: how long the scheduler waits for the
// sequences of a round to post their next steps, so that their decode steps batch.
const DefaultBatchWait = 2 * time.Millisecond

// BlockSize is the number of positions in one KV block, the unit the KV metrics count in (the
// attention kernels' key chunk).
const BlockSize = 32

// ErrQueueFull is returned by Submit when every slot is busy and the queue is full; the caller
// may retry later (the HTTP layer answers 503 with Retry-After).
var ErrQueueFull = errors.New("serve: all slots are busy and the queue is full")

// ErrClosed is returned by Submit once Shutdown has begun, and is the cause of the context of
// requests Shutdown cancels.
var ErrClosed = errors.New("serve: the engine is shutting down")

// ErrEmptyPrompt is returned by Submit for a request without prompt tokens.
var ErrEmptyPrompt = errors.New("serve: the prompt has no tokens")

// PromptTooLongError is returned by Submit for a prompt that can never fit a sequence's KV cache.
type PromptTooLongError struct {
	Tokens int // prompt tokens
	Limit  int // the context size of a sequence
}

// Error names the prompt's token count and the limit.
func (e *PromptTooLongError) Error() string {
	return fmt.Sprintf("the prompt has %d tokens, more than the context size of %d tokens", e.Tokens, e.Limit)
}

// KVPool is a KV cache in blocks shared by all of an engine's slots (runtime.PagedKV): the
// engine reserves blocks per request (see the package comment) and reports the pool's use.
type KVPool interface {
	// Blocks reports the blocks the sequences hold and the pool's total.
	Blocks() (used, total int)
	// BlockSize is the number of positions in a block.
	BlockSize() int
}

// Options configure New.
type Options struct {
	// Backends are the sequence slots, one Backend each with its own KV cache (see
	// bitgpu.Model.NewSequence); their number is the most sequences that run at once. The
	// engine resets them but does not close them. It runs one forward pass at a time (batched
	// or not), so backends that share a worker pool (cpu.Backend.NewSequence) are safe. Slots
	// whose backends batch together (runtime.AsBatchDecoder, CanBatch: the model's backend and
	// its NewSequence sequences on the fast CPU backend) decode in batched steps.
	Backends []runtime.Backend
	// Tokenizer decodes generated text and names the end-of-text tokens.
	Tokenizer model.Tokenizer
	// Context is each backend's KV-cache capacity in tokens; 0 means the model's context length.
	Context int
	// Queue is the most requests that wait for a free slot: 0 means DefaultQueue, negative none.
	Queue int
	// PrefillChunk is the most prompt tokens one step prefills: 0 means DefaultPrefillChunk.
	PrefillChunk int
	// LoRAScales are the scales of the backends' LoRA adapters for a request that names none
	// (Request.LoRA nil), in load order; every backend must then be a runtime.LoRABackend with
	// that many adapters. Nil when no adapters are loaded.
	LoRAScales []float32
	// Unbatched runs every decode step alone, one forward pass per sequence, even where the
	// backends batch (the engine without continuous batching, for comparisons).
	Unbatched bool
	// KVPool, when not nil, is the paged KV cache the backends' sequences share: requests
	// reserve its blocks at admission (package comment). Nil: every slot owns its cache.
	KVPool KVPool
	// BatchWait is the longest the scheduler waits for the sequences of a round to post their
	// next steps before it starts the next round without them: 0 means DefaultBatchWait. It
	// matters only where decode steps batch.
	BatchWait time.Duration
}

// Request is one generation.
type Request struct {
	// Prompt is the token ids to continue, BOS included when the model wants one
	// (runtime.EncodePrompt, model.EncodeChat).
	Prompt []int
	// MaxTokens is the most tokens to generate; 0 or negative: until the end of text or of the
	// context.
	MaxTokens int
	// Sampler is the sampling (temperature 0 is greedy); see runtime.Sampler.
	Sampler runtime.SamplerOptions
	// Stop strings end the text before the first one that appears.
	Stop []string
	// IgnoreEOS keeps generating after the end-of-text and end-of-turn tokens.
	IgnoreEOS bool
	// Logprobs asks for the log-probability of each generated token (Piece.Logprobs,
	// Result.Logprobs), and TopLogprobs for that many most likely alternatives at each step.
	Logprobs    bool
	TopLogprobs int
	// OnPiece, when not nil, receives the text as it is generated (never half a UTF-8 character,
	// never a stop string). An error from it ends the request with that error.
	OnPiece func(Piece) error
	// LoRA, when not nil, are the scales of the loaded LoRA adapters for this request, one per
	// adapter in load order (0 switches one off; llama-server's per-request "lora" field); nil
	// means Options.LoRAScales. Requests with different scales run side by side, each slot
	// with its own.
	LoRA []float32
}

// Piece is a stretch of generated text and, when asked for, the log-probabilities of the tokens
// that completed it.
type Piece struct {
	Text     string
	Logprobs []TokenLogprob
}

// TokenLogprob is one generated token, its log-probability under the model (the log-softmax of
// its logits, before any sampling transform) and the most likely alternatives, most likely first.
type TokenLogprob struct {
	ID      int
	Bytes   []byte // the token's raw bytes (a piece of a UTF-8 character, possibly)
	Logprob float64
	Top     []TopLogprob
}

// TopLogprob is one alternative token and its log-probability.
type TopLogprob struct {
	ID      int
	Bytes   []byte
	Logprob float64
}

// Result is the outcome of one request.
type Result struct {
	Text         string
	Tokens       []int // generated ids, a final end-of-text token included
	PromptTokens int
	// Stop says why generation ended (runtime.StopEOS, StopLength, StopContext, StopString,
	// StopCanceled).
	Stop runtime.StopReason
	// Logprobs are those of the tokens whose text was delivered (Request.Logprobs).
	Logprobs []TokenLogprob
	// Queued is the time spent waiting for a slot; FirstToken the time from Submit to the first
	// generated token; InterToken the times between consecutive generated tokens; Total the time
	// from Submit to the end.
	Queued, FirstToken, Total time.Duration
	InterToken                []time.Duration
}

// Stats is a snapshot of the engine's load.
type Stats struct {
	Slots, Running, Queued int
	// KVBlocksUsed counts the BlockSize-position blocks the running sequences' caches fill
	// (with a KVPool: the blocks its sequences hold); KVBlocksTotal the blocks of every slot's
	// cache together (the pool's); KVBlocksReserved the pool's blocks the running requests
	// reserved (0 without a pool).
	KVBlocksUsed, KVBlocksTotal, KVBlocksReserved int
	// Steps counts the scheduler rounds so far.
	Steps int64
	// DecodeTokens counts the decode steps run so far (one generated token's forward pass
	// each, batched or alone); BatchedSteps the batched forward passes among them
	// (runtime.BatchDecoder over two sequences or more) and BatchedTokens the decode steps
	// those ran, so BatchedTokens/BatchedSteps is the mean batch width.
	DecodeTokens, BatchedSteps, BatchedTokens int64
	// BatchedChunks counts the prompt chunks prefilled inside a batched pass (runtime.StepBatcher)
	// rather than alone.
	BatchedChunks int64
}

// Engine runs requests over its slots. Its methods are safe for concurrent use.
type Engine struct {
	opts  Options
	steps chan *step
	quit  chan struct{}
	loop  sync.WaitGroup

	// batch is per slot the batched step of its group (nil: the slot steps alone); group the
	// slot's group, the lowest slot index of the backends that batch with it (-1: none);
	// batching whether some group has two slots or more.
	batch    []runtime.BatchDecoder
	group    []int
	batching bool
	wake     chan struct{} // release pokes the scheduler waiting for a round's sequences

	mu       sync.Mutex
	free     []int     // free slot indices, lowest first
	waiters  []*waiter // FIFO
	running  map[int]*sequence
	closed   bool
	inflight sync.WaitGroup
	cancels  map[*sequence]context.CancelCauseFunc
	reserved int // KV pool blocks the running requests reserved
	pool     int // the KV pool's blocks (constant; read once so that e.mu never waits on a step)
	rounds   int64
	decoded  int64 // Stats.DecodeTokens
	batched  int64 // Stats.BatchedSteps
	bTokens  int64 // Stats.BatchedTokens
	bChunks  int64 // Stats.BatchedChunks
}

// waiter is a request queued for a slot and need KV pool blocks; slot receives the slot granted
// (the blocks are reserved with it).
type waiter struct {
	slot chan int
	need int
}

// sequence is a request holding a slot and need reserved KV pool blocks.
type sequence struct {
	slot int
	need int
	b    runtime.Backend
	pos  atomic.Int64 // b.Pos() after the last step, for Stats
}

// step is one forward pass of one sequence, run by the scheduler goroutine: a decode step of
// token (logits out), or fn (a prefill chunk). A step whose ctx is done when its turn comes
// does nothing and fails with ctx's cause.
type step struct {
	seq    *sequence
	ctx    context.Context
	decode bool
	token  int
	logits []float32
	// chunk, when not nil, is the prompt chunk fn prefills (last-token logits only): a step a
	// runtime.StepBatcher can take into the round's batched pass instead of running fn, leaving
	// the chunk's last logits in logits.
	chunk []int
	fn    func() error
	err   error
	done  chan struct{}
}

// runAlone runs s as a forward pass of its sequence alone.
func (s *step) runAlone() {
	if s.decode {
		s.logits, s.err = s.seq.b.Decode(s.token)
	} else {
		s.err = s.fn()
	}
	s.seq.pos.Store(int64(s.seq.b.Pos()))
}

// New starts an engine over o.Backends. Shutdown stops it.
func New(o Options) (*Engine, error) {
	if len(o.Backends) == 0 {
		return nil, fmt.Errorf("serve: no backends (need at least one sequence slot)")
	}
	if o.Tokenizer == nil {
		return nil, fmt.Errorf("serve: nil tokenizer")
	}
	for i, b := range o.Backends {
		if b == nil {
			return nil, fmt.Errorf("serve: backend %d is nil", i)
		}
		if len(o.LoRAScales) == 0 {
			continue
		}
		if lb, ok := b.(runtime.LoRABackend); !ok || lb.LoRAAdapters() != len(o.LoRAScales) {
			return nil, fmt.Errorf("serve: backend %d does not hold the %d LoRA adapters of Options.LoRAScales", i, len(o.LoRAScales))
		}
	}
	if o.Context <= 0 {
		o.Context = o.Backends[0].Config().ContextLength
	}
	if o.Queue == 0 {
		o.Queue = DefaultQueue
	}
	if o.PrefillChunk <= 0 {
		o.PrefillChunk = DefaultPrefillChunk
	}
	if o.BatchWait <= 0 {
		o.BatchWait = DefaultBatchWait
	}
	e := &Engine{opts: o, steps: make(chan *step, len(o.Backends)), quit: make(chan struct{}),
		running: map[int]*sequence{}, cancels: map[*sequence]context.CancelCauseFunc{},
		batch: make([]runtime.BatchDecoder, len(o.Backends)), group: make([]int, len(o.Backends)),
		wake: make(chan struct{}, 1)}
	for i := range o.Backends {
		e.free = append(e.free, i)
	}
	if o.KVPool != nil {
		_, e.pool = o.KVPool.Blocks()
	}
	e.groupSlots()
	e.loop.Add(1)
	go e.schedule()
	return e, nil
}

// groupSlots sets e.group and e.batch: each slot whose backend has a batched step joins the group
// of the first slot before it whose step can take it (CanBatch), or starts its own group.
func (e *Engine) groupSlots() {
	size := map[int]int{}
	for i, b := range e.opts.Backends {
		e.group[i] = -1
		d, ok := runtime.AsBatchDecoder(b)
		if e.opts.Unbatched || !ok || !d.CanBatch(b) {
			continue
		}
		e.group[i], e.batch[i] = i, d
		for j := range i {
			if e.group[j] == j && e.batch[j].CanBatch(b) {
				e.group[i], e.batch[i] = j, e.batch[j]
				break
			}
		}
		size[e.group[i]]++
		e.batching = e.batching || size[e.group[i]] > 1
	}
}

// Slots is the number of sequences that can run at once.
func (e *Engine) Slots() int { return len(e.opts.Backends) }

// LoRAScales returns a copy of Options.LoRAScales: the scales of the loaded LoRA adapters for
// requests that name none (nil when none are loaded).
func (e *Engine) LoRAScales() []float32 { return slices.Clone(e.opts.LoRAScales) }

// Context is each sequence's KV-cache capacity in tokens.
func (e *Engine) Context() int { return e.opts.Context }

// Tokenizer is the tokenizer the engine decodes with.
func (e *Engine) Tokenizer() model.Tokenizer { return e.opts.Tokenizer }

// Stats returns a snapshot of the engine's load.
func (e *Engine) Stats() Stats {
	var used int
	if e.opts.KVPool != nil { // before e.mu: the pool's lock is held for a whole step
		used, _ = e.opts.KVPool.Blocks()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Stats{Slots: len(e.opts.Backends), Running: len(e.running), Queued: len(e.waiters), Steps: e.rounds,
		KVBlocksTotal: len(e.opts.Backends) * ((e.opts.Context + BlockSize - 1) / BlockSize),
		DecodeTokens:  e.decoded, BatchedSteps: e.batched, BatchedTokens: e.bTokens, BatchedChunks: e.bChunks}
	if e.opts.KVPool != nil {
		s.KVBlocksUsed, s.KVBlocksTotal = used, e.pool
		s.KVBlocksReserved = e.reserved
		return s
	}
	for _, sq := range e.running {
		s.KVBlocksUsed += (int(sq.pos.Load()) + BlockSize - 1) / BlockSize
	}
	return s
}

// schedule is the scheduler goroutine: it runs the pending steps in rounds (runRound).
func (e *Engine) schedule() {
	defer e.loop.Done()
	var round []*step
	var prev []*sequence // the previous round's sequences
	for {
		round = round[:0]
		select {
		case s := <-e.steps:
			round = append(round, s)
		case <-e.quit:
			return
		}
		round = e.gather(round, prev)
		e.runRound(round)
		prev = prev[:0]
		for _, s := range round {
			prev = append(prev, s.seq)
		}
	}
}

// gather adds to round the steps posted meanwhile and, where decode steps batch, waits up to
// BatchWait for every sequence of the previous round (prev) to post its next step or leave.
func (e *Engine) gather(round []*step, prev []*sequence) []*step {
drain:
	for {
		select {
		case s := <-e.steps:
			round = append(round, s)
		default:
			break drain
		}
	}
	if !e.batching || len(prev) == 0 {
		return round
	}
	timer := time.NewTimer(e.opts.BatchWait)
	defer timer.Stop()
	for !e.posted(round, prev) {
		select {
		case s := <-e.steps:
			round = append(round, s)
		case <-e.wake:
		case <-timer.C:
			return round
		case <-e.quit:
			return round
		}
	}
	return round
}

// posted reports whether every sequence of prev has a step in round or has left its slot.
func (e *Engine) posted(round []*step, prev []*sequence) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range prev {
		if e.running[p.slot] == p && !slices.ContainsFunc(round, func(s *step) bool { return s.seq == p }) {
			return false
		}
	}
	return true
}

// runRound runs one round's steps: those whose context is done fail with its cause; the decode
// steps of each batch group, when there are two or more, run as one batched forward pass (if
// that fails, each runs alone, so that each request gets its own error); the rest run alone in
// slot order.
func (e *Engine) runRound(round []*step) {
	slices.SortFunc(round, func(a, b *step) int { return a.seq.slot - b.seq.slot })
	var alone []*step
	groups := map[int][]*step{}
	var leaders []int
	for _, s := range round {
		_, chunks := e.batch[s.seq.slot].(runtime.StepBatcher)
		switch {
		case s.ctx.Err() != nil:
			s.err = context.Cause(s.ctx)
		case (s.decode || (s.chunk != nil && chunks)) && e.group[s.seq.slot] >= 0:
			g := e.group[s.seq.slot]
			if groups[g] == nil {
				leaders = append(leaders, g)
			}
			groups[g] = append(groups[g], s)
		default:
			alone = append(alone, s)
		}
	}
	var decoded, batched, bTokens, chunks int64
	for _, g := range leaders {
		ss := groups[g]
		if len(ss) < 2 || !e.decodeBatch(e.batch[g], ss) {
			alone = append(alone, ss...)
			continue
		}
		n := int64(0) // decode steps in the pass (the rest are prompt chunks)
		for _, s := range ss {
			if s.decode {
				n++
			}
		}
		if n > 0 {
			batched++
		}
		bTokens += n
		decoded += n
		chunks += int64(len(ss)) - n
	}
	slices.SortFunc(alone, func(a, b *step) int { return a.seq.slot - b.seq.slot })
	for _, s := range alone {
		s.runAlone()
		if s.decode && s.err == nil {
			decoded++
		}
	}
	e.mu.Lock()
	e.rounds++
	e.decoded += decoded
	e.batched += batched
	e.bTokens += bTokens
	e.bChunks += chunks
	e.mu.Unlock()
	for _, s := range round {
		close(s.done)
	}
}

// decodeBatch runs the steps ss — decode steps, and prompt chunks where d is a
// runtime.StepBatcher — as one batched forward pass of d and reports whether it succeeded (a
// failure changes no sequence: the caller runs the steps alone).
func (e *Engine) decodeBatch(d runtime.BatchDecoder, ss []*step) bool {
	bs := make([]runtime.Backend, len(ss))
	toks := make([]int, len(ss))
	chunks := make([][]int, len(ss))
	mixed := false
	for i, s := range ss {
		bs[i], toks[i], chunks[i] = s.seq.b, s.token, []int{s.token}
		if !s.decode {
			chunks[i], mixed = s.chunk, true
		}
	}
	var rows [][]float32
	var err error
	if sb, ok := d.(runtime.StepBatcher); ok && mixed {
		rows, err = sb.StepBatch(bs, chunks)
	} else {
		rows, err = d.DecodeBatch(bs, toks)
	}
	if err != nil {
		return false
	}
	for i, s := range ss {
		s.logits = rows[i]
		s.seq.pos.Store(int64(s.seq.b.Pos()))
	}
	return true
}

// Submit runs r to completion and returns its result: it waits for a slot (ErrQueueFull when
// the queue is full), prefills the prompt and generates, calling r.OnPiece as text arrives.
// Cancelling ctx (a client that went away) stops the request at its next step and frees the
// slot; the error is then ctx's cause, with the result so far. Other errors: ErrEmptyPrompt, a
// *PromptTooLongError, ErrClosed, an invalid r.Sampler (the error names the option), and errors
// from the backend or OnPiece.
func (e *Engine) Submit(ctx context.Context, r Request) (Result, error) {
	start := time.Now()
	res := Result{PromptTokens: len(r.Prompt)}
	switch {
	case len(r.Prompt) == 0:
		return res, ErrEmptyPrompt
	case len(r.Prompt) > e.opts.Context:
		return res, &PromptTooLongError{Tokens: len(r.Prompt), Limit: e.opts.Context}
	}
	vocab := e.opts.Backends[0].Config().VocabSize
	for i, t := range r.Prompt {
		if t < 0 || t >= vocab {
			return res, fmt.Errorf("serve: prompt token %d is %d, outside the vocabulary [0, %d)", i, t, vocab)
		}
	}
	sampler, err := runtime.NewSampler(r.Sampler)
	if err != nil {
		return res, err
	}
	scales := r.LoRA
	if scales == nil {
		scales = e.opts.LoRAScales
	}
	if len(scales) != len(e.opts.LoRAScales) {
		return res, fmt.Errorf("serve: %d LoRA scales for %d loaded adapters", len(scales), len(e.opts.LoRAScales))
	}
	for i, s := range scales {
		if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
			return res, fmt.Errorf("serve: LoRA adapter %d: scale %v must be finite", i, s)
		}
	}
	need, err := e.blocksFor(len(r.Prompt), r.MaxTokens)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	seq, err := e.acquire(ctx, cancel, need)
	if err != nil {
		return res, err
	}
	defer e.release(seq)
	res.Queued = time.Since(start)

	seq.b.Reset()
	if len(scales) > 0 {
		if err := seq.b.(runtime.LoRABackend).SetLoRAScales(scales); err != nil {
			return res, err
		}
	}
	var (
		pending []TokenLogprob
		last    time.Time
	)
	tok := e.opts.Tokenizer
	opts := runtime.GenerateOptions{MaxTokens: r.MaxTokens, Context: e.opts.Context, Sampler: sampler,
		IgnoreEOS: r.IgnoreEOS, Stop: r.Stop, Ctx: ctx}
	if opts.MaxTokens <= 0 {
		opts.MaxTokens = -1
	}
	if e.opts.KVPool != nil { // never past the reserved blocks (fewer than the context's when capped at the pool)
		opts.Context = min(opts.Context, need*e.opts.KVPool.BlockSize())
	}
	opts.Sampled = func(id int, logits []float32) error {
		now := time.Now()
		if last.IsZero() {
			res.FirstToken = now.Sub(start)
		} else {
			res.InterToken = append(res.InterToken, now.Sub(last))
		}
		last = now
		if r.Logprobs {
			pending = append(pending, logprobOf(tok, logits, id, r.TopLogprobs))
		}
		return nil
	}
	opts.Emit = func(text string) error {
		p := Piece{Text: text, Logprobs: pending}
		res.Logprobs = append(res.Logprobs, pending...)
		pending = nil
		if r.OnPiece != nil {
			return r.OnPiece(p)
		}
		return nil
	}
	sb := &stepBackend{Backend: seq.b, e: e, ctx: ctx, seq: seq}
	st, err := runtime.Generate(sb, tok, r.Prompt, opts)
	res.Text, res.Tokens, res.Stop = st.Text, st.Tokens, st.Stop
	res.Total = time.Since(start)
	if err != nil && ctx.Err() != nil {
		res.Stop = runtime.StopCanceled
		return res, context.Cause(ctx)
	}
	return res, err
}

// blocksFor is the number of KV pool blocks a request of prompt tokens and maxTokens (<= 0: to
// the end of the context) reserves: those of min(prompt + maxTokens, context) positions, at most
// the pool (a request that needs them all runs alone, and stops, StopContext, when it has filled
// the pool). 0 without a pool. A prompt that needs more
// blocks than the pool holds is a *PromptTooLongError.
func (e *Engine) blocksFor(prompt, maxTokens int) (int, error) {
	pool := e.opts.KVPool
	if pool == nil {
		return 0, nil
	}
	total := e.pool
	bs := pool.BlockSize()
	if (prompt+bs-1)/bs > total {
		return 0, &PromptTooLongError{Tokens: prompt, Limit: total * bs}
	}
	n := e.opts.Context
	if maxTokens > 0 {
		n = min(n, prompt+maxTokens)
	}
	return min((n+bs-1)/bs, total), nil
}

// fits reports whether need more pool blocks can be reserved (always without a pool).
func (e *Engine) fits(need int) bool {
	if e.opts.KVPool == nil {
		return true
	}
	return e.reserved+need <= e.pool
}

// acquire takes a free slot and need pool blocks for a request, waiting in the queue when there
// are not both.
func (e *Engine) acquire(ctx context.Context, cancel context.CancelCauseFunc, need int) (*sequence, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	grant := func(slot int) *sequence {
		seq := &sequence{slot: slot, need: need, b: e.opts.Backends[slot]}
		e.running[slot] = seq
		e.cancels[seq] = cancel
		e.inflight.Add(1)
		return seq
	}
	if len(e.free) > 0 && len(e.waiters) == 0 && e.fits(need) {
		slot := e.free[0]
		e.free = e.free[1:]
		e.reserved += need
		seq := grant(slot)
		e.mu.Unlock()
		return seq, nil
	}
	if len(e.waiters) >= max(e.opts.Queue, 0) {
		e.mu.Unlock()
		return nil, ErrQueueFull
	}
	w := &waiter{slot: make(chan int, 1), need: need}
	e.waiters = append(e.waiters, w)
	e.inflight.Add(1) // a queued request is in flight for Shutdown
	e.mu.Unlock()
	defer e.inflight.Done()
	select {
	case slot := <-w.slot:
		if slot < 0 {
			return nil, ErrClosed
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		return grant(slot), nil
	case <-ctx.Done():
		e.mu.Lock()
		if i := slices.Index(e.waiters, w); i >= 0 {
			e.waiters = slices.Delete(e.waiters, i, i+1)
			e.grantWaiters() // those behind w may fit where w did not
			e.mu.Unlock()
		} else { // granted meanwhile: give the slot on
			e.mu.Unlock()
			if slot := <-w.slot; slot >= 0 {
				e.handOn(slot, need)
			}
		}
		return nil, context.Cause(ctx)
	}
}

// release frees seq's slot and blocks (the backend is reset: a paged sequence gives its blocks
// back to the pool), handing them to the first waiter.
func (e *Engine) release(seq *sequence) {
	if e.opts.KVPool != nil {
		seq.b.Reset()
	}
	e.mu.Lock()
	delete(e.running, seq.slot)
	delete(e.cancels, seq)
	e.mu.Unlock()
	select { // a scheduler waiting for seq's next step stops waiting
	case e.wake <- struct{}{}:
	default:
	}
	e.handOn(seq.slot, seq.need)
	e.inflight.Done()
}

// handOn returns a slot and its reserved pool blocks, then grants free slots to the waiters in
// order while the first one's blocks fit.
func (e *Engine) handOn(slot, need int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reserved -= need
	i, _ := slices.BinarySearch(e.free, slot)
	e.free = slices.Insert(e.free, i, slot)
	e.grantWaiters()
}

// grantWaiters grants free slots to the waiters in order while the first one's blocks fit; the
// caller holds e.mu.
func (e *Engine) grantWaiters() {
	for len(e.free) > 0 && len(e.waiters) > 0 && e.fits(e.waiters[0].need) {
		w := e.waiters[0]
		e.waiters = e.waiters[1:]
		e.reserved += w.need
		w.slot <- e.free[0]
		e.free = e.free[1:]
	}
}

// Shutdown stops the engine: Submit returns ErrClosed from now on; requests running or queued
// go on until they finish or ctx is done, when the rest are cancelled (their error is
// ErrClosed) and Shutdown waits for them to leave (one step each at most). It then stops the
// scheduler and returns ctx's error if it had to cancel. The backends stay open.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	done := make(chan struct{})
	go func() { e.inflight.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		e.CancelAll(ErrClosed)
		<-done
	}
	close(e.quit)
	e.loop.Wait()
	return err
}

// CancelAll cancels every running or queued request with cause.
func (e *Engine) CancelAll(cause error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.cancels {
		c(cause)
	}
	for _, w := range e.waiters {
		w.slot <- -1
	}
	e.waiters = nil
}

// stepBackend is a slot's backend seen through the scheduler: each Decode, and each
// PrefillChunk-token part of a Prefill, is one scheduler step.
type stepBackend struct {
	runtime.Backend
	e   *Engine
	ctx context.Context
	seq *sequence
}

// Decode runs one decode step when the scheduler gives this sequence its turn, batched with the
// round's other decode steps where the backends allow.
func (s *stepBackend) Decode(token int) ([]float32, error) {
	st := &step{seq: s.seq, ctx: s.ctx, decode: true, token: token, done: make(chan struct{})}
	s.e.steps <- st
	<-st.done
	return st.logits, st.err
}

// Prefill runs the prompt in chunks of PrefillChunk tokens, one scheduler step each; the bit-exact
// contract makes the logits and cache those of one Prefill call.
func (s *stepBackend) Prefill(tokens []int, allLogits bool) ([]float32, error) {
	var all, logits []float32
	for lo := 0; lo < len(tokens); lo += s.e.opts.PrefillChunk {
		hi := min(len(tokens), lo+s.e.opts.PrefillChunk)
		st := &step{seq: s.seq, ctx: s.ctx, done: make(chan struct{}), fn: func() error {
			l, err := s.Backend.Prefill(tokens[lo:hi], allLogits)
			if allLogits {
				all = append(all, l...)
			}
			logits = l
			return err
		}}
		if !allLogits { // a batched pass may take it (runtime.StepBatcher)
			st.chunk = tokens[lo:hi]
		}
		s.e.steps <- st
		<-st.done
		err := st.err
		if err == nil && st.logits != nil { // it ran in a batched pass
			logits = st.logits
		}
		if err != nil {
			return nil, err
		}
	}
	if allLogits {
		return all, nil
	}
	return logits, nil
}

// logprobOf is the log-softmax of logits at id, with the top alternatives (ties: lower id first).
func logprobOf(tok model.Tokenizer, logits []float32, id, top int) TokenLogprob {
	mx := math.Inf(-1)
	for _, l := range logits {
		mx = max(mx, float64(l))
	}
	var sum float64
	for _, l := range logits {
		sum += math.Exp(float64(l) - mx)
	}
	lse := mx + math.Log(sum)
	t := TokenLogprob{ID: id, Bytes: tok.TokenBytes(id), Logprob: float64(logits[id]) - lse}
	if top <= 0 {
		return t
	}
	top = min(top, len(logits))
	best := make([]int, 0, top+1)
	for i, l := range logits {
		if len(best) == top && l <= logits[best[top-1]] {
			continue
		}
		j, _ := slices.BinarySearchFunc(best, i, func(a, target int) int {
			if logits[a] > logits[target] || (logits[a] == logits[target] && a < target) {
				return -1
			}
			return 1
		})
		best = slices.Insert(best, j, i)
		if len(best) > top {
			best = best[:top]
		}
	}
	for _, b := range best {
		t.Top = append(t.Top, TopLogprob{ID: b, Bytes: tok.TokenBytes(b), Logprob: float64(logits[b]) - lse})
	}
	return t
}
