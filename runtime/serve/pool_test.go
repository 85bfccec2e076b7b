package serve

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// errPoolFull is fakePool's error for a step it has no free blocks for (runtime.PagedKV's
// ErrKVFull).
var errPoolFull = errors.New("fake KV pool: no free blocks")

// fakePool is a KVPool of total blocks of size positions that its pagedSlots take blocks from as
// they grow and give back when they are reset, like runtime.PagedKV over CPU backends: a step
// that needs more blocks than are free fails with errPoolFull, so every test also checks that the
// engine's reservations keep the pool from running dry in the middle of a request.
type fakePool struct {
	size, total int
	mu          sync.Mutex
	used        int // guarded by mu, as are the slots' held
}

// Blocks reports the blocks the slots hold and the pool's total.
func (p *fakePool) Blocks() (used, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used, p.total
}

// BlockSize is the positions in a block.
func (p *fakePool) BlockSize() int { return p.size }

// pagedSlot is a real CPU backend seen as a sequence of a fakePool: it takes the blocks of the
// positions it grows to before each step and gives them all back at Reset, which it counts.
type pagedSlot struct {
	runtime.Backend
	pool   *fakePool
	held   int // blocks held, guarded by pool.mu
	resets atomic.Int64
	// onReset, when set, is called once, at the end of the next Reset.
	onReset atomic.Pointer[func()]
}

// take takes the blocks that pos positions need beyond those held, or fails with errPoolFull.
func (s *pagedSlot) take(pos int) error {
	p := s.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	need := (pos+p.size-1)/p.size - s.held
	if need <= 0 {
		return nil
	}
	if p.used+need > p.total {
		return fmt.Errorf("%w: %d more with %d of %d in use", errPoolFull, need, p.used, p.total)
	}
	p.used += need
	s.held += need
	return nil
}

func (s *pagedSlot) Prefill(tokens []int, allLogits bool) ([]float32, error) {
	if err := s.take(s.Pos() + len(tokens)); err != nil {
		return nil, err
	}
	return s.Backend.Prefill(tokens, allLogits)
}

func (s *pagedSlot) Decode(token int) ([]float32, error) {
	if err := s.take(s.Pos() + 1); err != nil {
		return nil, err
	}
	return s.Backend.Decode(token)
}

// Reset empties the cache and gives the slot's blocks back to the pool.
func (s *pagedSlot) Reset() {
	s.Backend.Reset()
	s.pool.mu.Lock()
	s.pool.used -= s.held
	s.held = 0
	s.pool.mu.Unlock()
	s.resets.Add(1)
	if f := s.onReset.Swap(nil); f != nil {
		(*f)()
	}
}

// Each pool test's sequences hold poolCtx tokens; the fake pool's blocks are poolBlock positions,
// so a whole context is 8 blocks.
const poolCtx, poolBlock = 64, 8

// poolRig is an engine over n CPU slots that share a fakePool, and the oracles.
type poolRig struct {
	e     *Engine
	pool  *fakePool
	slots []*pagedSlot
	solo  runtime.Backend // the oracle: requests run on it alone
	tok   model.Tokenizer
}

// newPoolRig opens n slots of poolCtx tokens on the fast CPU backend as sequences of a fakePool
// of total blocks and starts an engine over them; with noPool the engine is not given the pool
// (every slot owns its cache), though the slots still count their blocks in it.
func newPoolRig(t *testing.T, n, total int, o Options, noPool bool) *poolRig {
	t.Helper()
	slots, solo, tok := cpuSlots(t, "cpu", n, poolCtx)
	r := &poolRig{pool: &fakePool{size: poolBlock, total: total}, solo: solo[0], tok: tok}
	o.Tokenizer, o.Context = tok, poolCtx
	for _, b := range slots {
		s := &pagedSlot{Backend: b, pool: r.pool}
		r.slots = append(r.slots, s)
		o.Backends = append(o.Backends, s)
	}
	if !noPool {
		o.KVPool = r.pool
	}
	e, err := New(o)
	require.NoError(t, err)
	r.e = e
	t.Cleanup(func() { // after the gates' cleanups (LIFO): nothing is held any more
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, e.Shutdown(ctx))
	})
	return r
}

// prompt is n token ids of the built-in vocabulary, different for each seed.
func prompt(n, seed int) []int {
	p := make([]int, n)
	for j := range p {
		p[j] = 1 + (seed*31+j*13)%200
	}
	return p
}

// alone is runtime.Generate's greedy tokens for p on the oracle alone, with the end of text
// ignored, up to maxTokens (<= 0: to the end of ctx tokens): what a request must get.
func (r *poolRig) alone(t *testing.T, p []int, maxTokens, ctx int) runtime.GenerateStats {
	t.Helper()
	if maxTokens <= 0 {
		maxTokens = -1
	}
	r.solo.Reset()
	st, err := runtime.Generate(r.solo, r.tok, p, runtime.GenerateOptions{MaxTokens: maxTokens, Context: ctx, IgnoreEOS: true})
	require.NoError(t, err)
	return st
}

// gate holds a request at its first piece of text: started closes then, and the request goes on
// once open is called (at the latest when the test ends).
type gate struct {
	started, release chan struct{}
	first, opened    sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{started: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() { g.opened.Do(func() { close(g.release) }) }

// onPiece is the request's OnPiece.
func (g *gate) onPiece(Piece) error {
	g.first.Do(func() {
		close(g.started)
		<-g.release
	})
	return nil
}

// isStarted reports whether the gate's request has produced its first piece.
func (g *gate) isStarted() bool {
	select {
	case <-g.started:
		return true
	default:
		return false
	}
}

// waitStarted waits for the gate's request to produce its first piece.
func (g *gate) waitStarted(t *testing.T, what string) {
	t.Helper()
	select {
	case <-g.started:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s never started", what)
	}
}

// outcome is what Submit returned.
type outcome struct {
	res Result
	err error
}

// submit runs Submit in a goroutine; the outcome arrives on the channel.
func (r *poolRig) submit(ctx context.Context, req Request) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		res, err := r.e.Submit(ctx, req)
		ch <- outcome{res, err}
	}()
	return ch
}

// await waits for a submitted request's outcome.
func await(t *testing.T, ch <-chan outcome, what string) outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(20 * time.Second):
		t.Fatalf("%s never finished", what)
		return outcome{}
	}
}

// waitStats polls Stats until cond holds (failing after a deadline) and returns that snapshot.
func waitStats(t *testing.T, e *Engine, what string, cond func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := e.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v", what, s)
		}
		time.Sleep(time.Millisecond)
	}
}

// requireIdle requires the engine idle with nothing reserved and the pool's blocks all back.
func requireIdle(t *testing.T, r *poolRig) {
	t.Helper()
	s := r.e.Stats()
	require.Equal(t, 0, s.Running, "running")
	require.Equal(t, 0, s.Queued, "queued")
	require.Equal(t, 0, s.KVBlocksReserved, "reserved blocks")
	require.Equal(t, 0, s.KVBlocksUsed, "pool blocks in use")
	require.Equal(t, r.pool.total, s.KVBlocksTotal)
}

// requireAlone requires a request's outcome to be the oracle's greedy tokens for it.
func requireAlone(t *testing.T, want runtime.GenerateStats, got outcome, what string) {
	t.Helper()
	require.NoError(t, got.err, what)
	require.Equal(t, want.Tokens, got.res.Tokens, what)
	require.Equal(t, want.Stop, got.res.Stop, what)
}

// TestKVPoolBlocksFor: a request reserves the blocks of min(prompt + MaxTokens, Context)
// positions, rounded up to whole blocks, the whole Context when MaxTokens <= 0, and at most the
// pool; a prompt of more blocks than the pool is a *PromptTooLongError naming the pool's
// positions; without a pool nothing is reserved.
func TestKVPoolBlocksFor(t *testing.T) {
	pool := &fakePool{size: poolBlock, total: 6}
	e := &Engine{opts: Options{Context: poolCtx, KVPool: pool}, pool: pool.total}
	for _, c := range []struct{ prompt, maxTokens, want int }{
		{1, 1, 1}, {5, 3, 1}, {5, 4, 2}, {8, 8, 2}, {9, 8, 3}, {16, 1, 3},
		{5, 0, 6}, {5, -1, 6}, {40, 10, 6}, {48, 1, 6}, // capped at the pool's 6 blocks
	} {
		got, err := e.blocksFor(c.prompt, c.maxTokens)
		require.NoError(t, err, "%+v", c)
		require.Equal(t, c.want, got, "prompt %d, max tokens %d", c.prompt, c.maxTokens)
	}
	_, err := e.blocksFor(49, 1)
	var long *PromptTooLongError
	require.ErrorAs(t, err, &long)
	require.Equal(t, PromptTooLongError{Tokens: 49, Limit: 48}, *long)

	pool.total, e.pool = 100, 100 // a pool larger than one context: the context bounds a request
	for _, c := range []struct{ prompt, maxTokens, want int }{{5, 0, 8}, {5, 100, 8}, {60, 4, 8}, {5, 3, 1}} {
		got, err := e.blocksFor(c.prompt, c.maxTokens)
		require.NoError(t, err)
		require.Equal(t, c.want, got, "prompt %d, max tokens %d", c.prompt, c.maxTokens)
	}

	e.opts.KVPool = nil
	got, err := e.blocksFor(poolCtx, 0)
	require.NoError(t, err)
	require.Zero(t, got, "no pool: no reservation")
}

// TestKVPoolWholePoolRunsAlone: with a pool of 4 blocks and 2 slots, a request whose prompt +
// MaxTokens need all 4 blocks runs alone — a second request waits in the queue (Queued 1,
// KVBlocksReserved 4) though a slot is free, and starts only once the first finishes — and both
// get the tokens they get alone (the first never runs the pool dry); afterwards nothing is
// reserved or held.
func TestKVPoolWholePoolRunsAlone(t *testing.T) {
	r := newPoolRig(t, 2, 4, Options{}, false)
	bg := context.Background()
	pa, pb := prompt(6, 1), prompt(6, 2)
	wantA, wantB := r.alone(t, pa, 26, poolCtx), r.alone(t, pb, 3, poolCtx)

	ga, gb := newGate(t), newGate(t)
	gb.open() // b only reports that it started

	a := r.submit(bg, Request{Prompt: pa, MaxTokens: 26, IgnoreEOS: true, OnPiece: ga.onPiece}) // 32 positions: 4 blocks
	ga.waitStarted(t, "a")
	s := r.e.Stats()
	require.Equal(t, Stats{Slots: 2, Running: 1, KVBlocksUsed: 1, KVBlocksTotal: 4, KVBlocksReserved: 4},
		Stats{Slots: s.Slots, Running: s.Running, Queued: s.Queued, KVBlocksUsed: s.KVBlocksUsed,
			KVBlocksTotal: s.KVBlocksTotal, KVBlocksReserved: s.KVBlocksReserved}, "a runs, its 6-token prompt in 1 block")

	b := r.submit(bg, Request{Prompt: pb, MaxTokens: 3, IgnoreEOS: true, OnPiece: gb.onPiece}) // 2 blocks
	s = waitStats(t, r.e, "b queued", func(s Stats) bool { return s.Queued == 1 })
	require.Equal(t, 1, s.Running, "b waits with a slot free")
	require.Equal(t, 4, s.KVBlocksReserved)
	require.False(t, gb.isStarted())

	ga.open()
	requireAlone(t, wantA, await(t, a, "a"), "a")
	ob := await(t, b, "b")
	requireAlone(t, wantB, ob, "b")
	require.True(t, gb.isStarted())
	require.Len(t, ob.res.Tokens, 3)
	requireIdle(t, r)
}

// TestKVPoolSmallRequestsShare: requests whose blocks fit the pool together run at once (a 1-block
// and a 2-block request in a 4-block pool: Running 2, KVBlocksReserved 3); a third of 2 blocks
// then waits for blocks though a slot is free (Queued 1), and starts when the 1-block request
// ends (Running 2, KVBlocksReserved 4). Each gets its tokens alone.
func TestKVPoolSmallRequestsShare(t *testing.T) {
	r := newPoolRig(t, 3, 4, Options{}, false)
	bg := context.Background()
	pa, pb, pc := prompt(5, 1), prompt(12, 2), prompt(5, 3)
	wantA, wantB, wantC := r.alone(t, pa, 3, poolCtx), r.alone(t, pb, 4, poolCtx), r.alone(t, pc, 11, poolCtx)
	ga, gb, gc := newGate(t), newGate(t), newGate(t)

	a := r.submit(bg, Request{Prompt: pa, MaxTokens: 3, IgnoreEOS: true, OnPiece: ga.onPiece}) // 8 positions: 1 block
	b := r.submit(bg, Request{Prompt: pb, MaxTokens: 4, IgnoreEOS: true, OnPiece: gb.onPiece}) // 16: 2 blocks
	ga.waitStarted(t, "a")
	gb.waitStarted(t, "b")
	s := r.e.Stats()
	require.Equal(t, 2, s.Running)
	require.Equal(t, 0, s.Queued)
	require.Equal(t, 3, s.KVBlocksReserved)
	require.Equal(t, 1+2, s.KVBlocksUsed, "a's 5 prompt positions in 1 block, b's 12 in 2")

	c := r.submit(bg, Request{Prompt: pc, MaxTokens: 11, IgnoreEOS: true, OnPiece: gc.onPiece}) // 16: 2 blocks
	s = waitStats(t, r.e, "c queued", func(s Stats) bool { return s.Queued == 1 })
	require.Equal(t, 2, s.Running, "c waits for blocks, not for a slot")
	require.Equal(t, 3, s.KVBlocksReserved)
	require.False(t, gc.isStarted())

	ga.open()
	requireAlone(t, wantA, await(t, a, "a"), "a")
	gc.waitStarted(t, "c")
	s = r.e.Stats()
	require.Equal(t, 2, s.Running)
	require.Equal(t, 0, s.Queued)
	require.Equal(t, 4, s.KVBlocksReserved, "b's 2 and c's 2")

	gb.open()
	gc.open()
	requireAlone(t, wantB, await(t, b, "b"), "b")
	requireAlone(t, wantC, await(t, c, "c"), "c")
	requireIdle(t, r)
}

// TestKVPoolPromptTooLong: with a pool of 2 blocks of 8 positions, a 17-token prompt is a
// *PromptTooLongError with Limit 16 (the pool's positions) — at once, even while the only slot is
// busy and there is no queue, and without touching the slots, the queue or the reservations — and
// a 16-token prompt runs (its reservation capped at the pool). A prompt over the context is still
// refused with the context as the limit.
func TestKVPoolPromptTooLong(t *testing.T) {
	r := newPoolRig(t, 1, 2, Options{Queue: -1}, false)
	bg := context.Background()
	var long *PromptTooLongError
	_, err := r.e.Submit(bg, Request{Prompt: prompt(17, 1), MaxTokens: 1})
	require.ErrorAs(t, err, &long)
	require.Equal(t, PromptTooLongError{Tokens: 17, Limit: 16}, *long)
	requireIdle(t, r)

	p := prompt(16, 2)
	want := r.alone(t, p, 1, poolCtx)
	g := newGate(t)
	a := r.submit(bg, Request{Prompt: p, MaxTokens: 1, IgnoreEOS: true, OnPiece: g.onPiece})
	g.waitStarted(t, "the 16-token prompt")
	before := r.e.Stats()
	require.Equal(t, 1, before.Running)
	require.Equal(t, 2, before.KVBlocksReserved)

	_, err = r.e.Submit(bg, Request{Prompt: prompt(17, 3), MaxTokens: 1})
	require.ErrorAs(t, err, &long, "refused for its size, not for the busy slot")
	require.Equal(t, PromptTooLongError{Tokens: 17, Limit: 16}, *long)
	_, err = r.e.Submit(bg, Request{Prompt: prompt(poolCtx+1, 4)})
	require.ErrorAs(t, err, &long)
	require.Equal(t, PromptTooLongError{Tokens: poolCtx + 1, Limit: poolCtx}, *long)
	_, err = r.e.Submit(bg, Request{Prompt: prompt(3, 5), MaxTokens: 1})
	require.ErrorIs(t, err, ErrQueueFull, "a prompt that fits meets the busy slot")
	require.Equal(t, before, r.e.Stats(), "the refusals changed nothing")

	g.open()
	requireAlone(t, want, await(t, a, "the 16-token prompt"), "the 16-token prompt")
	require.Equal(t, int64(2), r.slots[0].resets.Load())
	requireIdle(t, r)
}

// TestKVPoolNoMaxTokens: a request without MaxTokens (0 or negative) reserves the blocks of the
// whole Context (8 of a 16-block pool: two such run at once, a third waits with a slot free) and
// generates to the end of the context; in a pool smaller than one context (2 blocks) its
// reservation is capped at the pool, it runs alone, and it stops at the end of the pool's 16
// positions (runtime.StopContext, the tokens of a 16-token context) instead of running the pool
// dry.
func TestKVPoolNoMaxTokens(t *testing.T) {
	bg := context.Background()
	t.Run("pool of two contexts", func(t *testing.T) {
		r := newPoolRig(t, 3, 16, Options{}, false)
		pa, pb, pc := prompt(5, 1), prompt(9, 2), prompt(7, 3)
		wantA, wantB, wantC := r.alone(t, pa, 0, poolCtx), r.alone(t, pb, 0, poolCtx), r.alone(t, pc, 0, poolCtx)
		require.Equal(t, runtime.StopContext, wantA.Stop)
		require.Len(t, wantA.Tokens, poolCtx-5+1)
		ga, gb := newGate(t), newGate(t)
		a := r.submit(bg, Request{Prompt: pa, IgnoreEOS: true, OnPiece: ga.onPiece})
		b := r.submit(bg, Request{Prompt: pb, MaxTokens: -1, IgnoreEOS: true, OnPiece: gb.onPiece})
		ga.waitStarted(t, "a")
		gb.waitStarted(t, "b")
		s := r.e.Stats()
		require.Equal(t, 2, s.Running)
		require.Equal(t, 16, s.KVBlocksReserved, "a whole context each")
		c := r.submit(bg, Request{Prompt: pc, IgnoreEOS: true})
		s = waitStats(t, r.e, "c queued", func(s Stats) bool { return s.Queued == 1 })
		require.Equal(t, 2, s.Running)
		ga.open()
		gb.open()
		requireAlone(t, wantA, await(t, a, "a"), "a")
		requireAlone(t, wantB, await(t, b, "b"), "b")
		requireAlone(t, wantC, await(t, c, "c"), "c")
		requireIdle(t, r)
	})
	t.Run("pool under one context", func(t *testing.T) {
		r := newPoolRig(t, 2, 2, Options{}, false)
		pa, pb := prompt(5, 1), prompt(4, 2)
		wantA, wantB := r.alone(t, pa, 0, 2*poolBlock), r.alone(t, pb, 2, poolCtx)
		require.Equal(t, runtime.StopContext, wantA.Stop)
		require.Len(t, wantA.Tokens, 2*poolBlock-5+1)
		ga := newGate(t)
		a := r.submit(bg, Request{Prompt: pa, IgnoreEOS: true, OnPiece: ga.onPiece})
		ga.waitStarted(t, "a")
		require.Equal(t, 2, r.e.Stats().KVBlocksReserved, "capped at the pool")
		b := r.submit(bg, Request{Prompt: pb, MaxTokens: 2, IgnoreEOS: true})
		s := waitStats(t, r.e, "b queued", func(s Stats) bool { return s.Queued == 1 })
		require.Equal(t, 1, s.Running, "a runs alone")
		ga.open()
		requireAlone(t, wantA, await(t, a, "a"), "a")
		requireAlone(t, wantB, await(t, b, "b"), "b")
		requireIdle(t, r)
	})
}

// TestKVPoolCancel: a request cancelled while it waits in the queue leaves (Queued 0) without
// reserving anything, and a running request cancelled mid-generation gives its blocks back, so
// the waiter behind it runs. A waiter cancelled as the request ahead of it ends — from inside that
// request's release, just before it grants the waiter the slot and blocks (so the waiter finds
// itself granted and must hand them on), or concurrently — leaves no reservation either. After
// each case nothing is reserved or held, and at the end a request of the whole pool still runs.
func TestKVPoolCancel(t *testing.T) {
	r := newPoolRig(t, 2, 4, Options{}, false)
	bg := context.Background()
	big := Request{Prompt: prompt(6, 1), MaxTokens: 26, IgnoreEOS: true} // 4 blocks: the pool
	wantBig := r.alone(t, big.Prompt, 26, poolCtx)

	t.Run("queued", func(t *testing.T) {
		ga := newGate(t)
		ra := big
		ra.OnPiece = ga.onPiece
		a := r.submit(bg, ra)
		ga.waitStarted(t, "a")
		ctx, cancel := context.WithCancel(bg)
		b := r.submit(ctx, Request{Prompt: prompt(5, 2), MaxTokens: 2, IgnoreEOS: true})
		waitStats(t, r.e, "b queued", func(s Stats) bool { return s.Queued == 1 })
		cancel()
		ob := await(t, b, "b")
		require.ErrorIs(t, ob.err, context.Canceled)
		require.Empty(t, ob.res.Tokens)
		s := r.e.Stats()
		require.Equal(t, 0, s.Queued)
		require.Equal(t, 1, s.Running)
		require.Equal(t, 4, s.KVBlocksReserved, "only a's")
		ga.open()
		requireAlone(t, wantBig, await(t, a, "a"), "a")
		requireIdle(t, r)
	})

	t.Run("running", func(t *testing.T) {
		ga := newGate(t)
		ctx, cancel := context.WithCancel(bg)
		ra := big
		ra.OnPiece = ga.onPiece
		a := r.submit(ctx, ra)
		ga.waitStarted(t, "a")
		pb := prompt(5, 3)
		wantB := r.alone(t, pb, 11, poolCtx)
		b := r.submit(bg, Request{Prompt: pb, MaxTokens: 11, IgnoreEOS: true}) // 2 blocks
		waitStats(t, r.e, "b queued", func(s Stats) bool { return s.Queued == 1 })
		cancel()
		ga.open()
		oa := await(t, a, "a")
		require.ErrorIs(t, oa.err, context.Canceled)
		require.Equal(t, runtime.StopCanceled, oa.res.Stop)
		require.Less(t, len(oa.res.Tokens), 26)
		requireAlone(t, wantB, await(t, b, "b"), "b")
		requireIdle(t, r)
	})

	t.Run("race", func(t *testing.T) {
		small := Request{Prompt: prompt(5, 4), MaxTokens: 1, IgnoreEOS: true} // 1 block
		for i := range 40 {
			ga := newGate(t)
			ra := small
			ra.MaxTokens = 27 // 4 blocks
			ra.OnPiece = ga.onPiece
			a := r.submit(bg, ra)
			ga.waitStarted(t, "a")
			ctx, cancel := context.WithCancel(bg)
			b := r.submit(ctx, small)
			waitStats(t, r.e, "b queued", func(s Stats) bool { return s.Queued == 1 })
			if i%2 == 0 {
				// b is cancelled by a's release (its backend's Reset), just before the
				// release grants b a's blocks and slot.
				f := func() { cancel() }
				r.slots[0].onReset.Store(&f)
			} else {
				go cancel()
			}
			ga.open()
			require.NoError(t, await(t, a, "a").err)
			if ob := await(t, b, "b"); ob.err != nil {
				require.ErrorIs(t, ob.err, context.Canceled, "round %d", i)
			}
			cancel()
			requireIdle(t, r)
		}
	})

	rb := big
	requireAlone(t, wantBig, await(t, r.submit(bg, rb), "the whole pool"), "the whole pool afterwards")
	requireIdle(t, r)
}

// TestKVPoolFIFO: the queue is served in order — intended, so that a large request is never
// starved by a stream of small ones: with a 2-block request running in a 4-block pool, a 4-block
// request waits at the head of the queue, and a 1-block request after it waits too though its
// block and a slot are free; when the first ends the large one runs (alone) and the small one
// still waits; it runs when the large one ends. The requests start in submission order.
func TestKVPoolFIFO(t *testing.T) {
	r := newPoolRig(t, 3, 4, Options{}, false)
	bg := context.Background()
	pa, pb, pc := prompt(5, 1), prompt(5, 2), prompt(5, 3)
	wantA, wantB, wantC := r.alone(t, pa, 11, poolCtx), r.alone(t, pb, 27, poolCtx), r.alone(t, pc, 3, poolCtx)
	var mu sync.Mutex
	var order []string
	started := func(name string, g *gate) func(Piece) error {
		var once sync.Once
		return func(p Piece) error {
			once.Do(func() {
				mu.Lock()
				order = append(order, name)
				mu.Unlock()
			})
			return g.onPiece(p)
		}
	}
	ga, gb, gc := newGate(t), newGate(t), newGate(t)
	gc.open()
	a := r.submit(bg, Request{Prompt: pa, MaxTokens: 11, IgnoreEOS: true, OnPiece: started("a", ga)}) // 2 blocks
	ga.waitStarted(t, "a")
	b := r.submit(bg, Request{Prompt: pb, MaxTokens: 27, IgnoreEOS: true, OnPiece: started("b", gb)}) // 4 blocks
	waitStats(t, r.e, "b queued", func(s Stats) bool { return s.Queued == 1 })
	c := r.submit(bg, Request{Prompt: pc, MaxTokens: 3, IgnoreEOS: true, OnPiece: started("c", gc)}) // 1 block
	s := waitStats(t, r.e, "c queued", func(s Stats) bool { return s.Queued == 2 })
	require.Equal(t, 1, s.Running, "c waits behind b though its block and a slot are free")
	require.Equal(t, 2, s.KVBlocksReserved)

	ga.open()
	requireAlone(t, wantA, await(t, a, "a"), "a")
	gb.waitStarted(t, "b")
	s = r.e.Stats()
	require.Equal(t, 1, s.Running)
	require.Equal(t, 1, s.Queued, "c still waits")
	require.Equal(t, 4, s.KVBlocksReserved)
	require.False(t, gc.isStarted())

	gb.open()
	requireAlone(t, wantB, await(t, b, "b"), "b")
	requireAlone(t, wantC, await(t, c, "c"), "c")
	require.Equal(t, []string{"a", "b", "c"}, order)
	requireIdle(t, r)
}

// TestKVPoolCancelHead: when the waiter at the head of the queue — a large request that did not
// fit — is cancelled, the waiters behind it that fit start at once (a 1-block request behind a
// cancelled 4-block one, with a 2-block request running in a 4-block pool and a slot free), not
// only when the running request ends.
func TestKVPoolCancelHead(t *testing.T) {
	r := newPoolRig(t, 3, 4, Options{}, false)
	bg := context.Background()
	pa, pc := prompt(5, 1), prompt(5, 3)
	wantA, wantC := r.alone(t, pa, 11, poolCtx), r.alone(t, pc, 3, poolCtx)
	ga, gc := newGate(t), newGate(t)
	a := r.submit(bg, Request{Prompt: pa, MaxTokens: 11, IgnoreEOS: true, OnPiece: ga.onPiece}) // 2 blocks
	ga.waitStarted(t, "a")
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	b := r.submit(ctx, Request{Prompt: prompt(5, 2), MaxTokens: 27, IgnoreEOS: true}) // 4 blocks
	waitStats(t, r.e, "b queued", func(s Stats) bool { return s.Queued == 1 })
	c := r.submit(bg, Request{Prompt: pc, MaxTokens: 3, IgnoreEOS: true, OnPiece: gc.onPiece}) // 1 block
	waitStats(t, r.e, "c queued", func(s Stats) bool { return s.Queued == 2 })

	cancel()
	require.ErrorIs(t, await(t, b, "b").err, context.Canceled)
	gc.waitStarted(t, "c, while a still runs,")
	s := r.e.Stats()
	require.Equal(t, 2, s.Running)
	require.Equal(t, 0, s.Queued)
	require.Equal(t, 3, s.KVBlocksReserved, "a's 2 and c's 1")
	require.Empty(t, a, "a still runs")

	gc.open()
	requireAlone(t, wantC, await(t, c, "c"), "c")
	ga.open()
	requireAlone(t, wantA, await(t, a, "a"), "a")
	requireIdle(t, r)
}

// TestKVPoolReleaseResets: with a pool, a request's slot is reset when it is admitted and again
// when it ends, so its blocks go back to the pool at once (the slot's position is 0 and the pool's
// blocks are all free while the slot is idle); without a pool the slot is reset only when the
// next request takes it and keeps its cache meanwhile.
func TestKVPoolReleaseResets(t *testing.T) {
	bg := context.Background()
	p := prompt(5, 1)
	for _, noPool := range []bool{false, true} {
		t.Run(fmt.Sprintf("pool=%v", !noPool), func(t *testing.T) {
			r := newPoolRig(t, 2, 4, Options{}, noPool)
			want := r.alone(t, p, 4, poolCtx)
			for i := range 2 {
				res, err := r.e.Submit(bg, Request{Prompt: p, MaxTokens: 4, IgnoreEOS: true})
				requireAlone(t, want, outcome{res, err}, "request")
				s := r.slots[0]
				used, _ := r.pool.Blocks()
				if noPool {
					require.Equal(t, int64(i+1), s.resets.Load(), "reset at admission only")
					require.Equal(t, 5+4-1, s.Pos(), "the cache kept")
					require.Equal(t, 1, used)
					continue
				}
				require.Equal(t, int64(2*(i+1)), s.resets.Load(), "reset at admission and at release")
				require.Zero(t, s.Pos())
				require.Zero(t, used)
				requireIdle(t, r)
			}
			require.Zero(t, r.slots[1].resets.Load(), "the second slot was never used")
		})
	}
}
