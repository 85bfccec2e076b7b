package cpu

import (
	goruntime "runtime"
	"sync"
	"sync/atomic"
	"time"
)

// pool is a persistent set of threads-1 helper goroutines, started once by newPool, that share
// runs of independent items (output rows, heads, vocabulary rows) with the caller. No goroutine
// is started per call. A pool serves one caller at a time (a Backend is not safe for concurrent
// use either).
//
// A run is cut into blocks of contiguous items (at least grain each, about blocksPerThread per
// thread). The caller publishes the run, wakes the helpers and then claims blocks itself from an
// atomic counter, like every helper; it waits only for blocks a helper has already claimed and
// is computing. So a helper that wakes late (a decode step is a few dozen dependent runs of tens
// of microseconds, and waking a parked goroutine goes through the OS: 5-50 µs on a busy VM) costs
// parallelism, never time: the caller does the blocks itself, and 2 threads are not slower than
// 1. After a run a helper polls for the next one for up to spinFor before it parks, yielding the
// processor (runtime.Gosched) between polls.
//
// Each item is computed by exactly one call of the run's function, in a fixed order within it, so
// results never depend on the number of threads or on which thread took which block.
type pool struct {
	threads int
	wake    []chan struct{} // one per helper, capacity 1
	cur     atomic.Pointer[poolRun]
	quit    atomic.Bool
	// Stall back-off (the caller's side only): solo is how many more runs the caller does alone,
	// backoff how many it will after the next stall (soloMin..soloMax, doubling on a stall of a
	// probing run, reset by a run without one).
	solo, backoff int
}

// poolRun is one run: its function, its blocks, and the first error in block order.
type poolRun struct {
	fn      func(lo, hi int) error
	n       int
	blocks  int
	next    atomic.Int64 // next block to claim
	done    atomic.Int64 // blocks finished
	mu      sync.Mutex
	errAt   int // block of err
	err     error
	claimed atomic.Bool // some helper took a block (for tests)
}

// spinFor is how long an idle helper polls for the next run before it parks.
const spinFor = 100 * time.Microsecond

// A stall: the caller, its own blocks done, waits for a helper's claimed block for more than
// stallMin and more than stallFactor times its own mean block time. On a machine with more
// runnable threads than cores the OS preempts a helper mid-block for a whole time slice
// (milliseconds), and a decode step of a small model is dozens of runs of microseconds; so after
// a stall the caller runs the next soloMin runs alone (doubling up to soloMax while the probing
// runs keep stalling), and 2 threads stay about as fast as 1 on an overloaded machine. Results
// never depend on it: every item is computed by one call in a fixed order either way.
const (
	stallMin    = 50 * time.Microsecond
	stallFactor = 4
	soloMin     = 64
	soloMax     = 4096
)

// blocksPerThread is how many blocks a run is cut into per thread, for balance when the threads
// do not all start at once.
const blocksPerThread = 4

// newPool starts threads-1 helper goroutines (threads < 1 counts as 1). close stops them.
func newPool(threads int) *pool {
	threads = max(threads, 1)
	p := &pool{threads: threads, wake: make([]chan struct{}, threads-1)}
	for i := range p.wake {
		p.wake[i] = make(chan struct{}, 1)
		go p.helper(p.wake[i])
	}
	return p
}

// parts returns how many blocks n items make when each block must hold at least grain items:
// between 1 and blocksPerThread*p.threads (1 for a one-thread pool).
func (p *pool) parts(n, grain int) int {
	if p.threads == 1 {
		return 1
	}
	return max(1, min(blocksPerThread*p.threads, n/max(grain, 1)))
}

// run calls fn over contiguous ranges [lo, hi) covering 0..n-1 exactly once — p.parts(n, grain)
// blocks, block i being [i*n/blocks, (i+1)*n/blocks) — spread over the caller and the helpers, and
// returns the error of the first failing block in block order. fn must not call run.
func (p *pool) run(n, grain int, fn func(lo, hi int) error) error {
	if n <= 0 {
		return nil
	}
	blocks := p.parts(n, grain)
	if blocks == 1 {
		return fn(0, n)
	}
	if p.solo > 0 { // backing off after a stall: the caller computes every block itself
		p.solo--
		r := &poolRun{fn: fn, n: n, blocks: blocks}
		r.work()
		return r.err
	}
	r := &poolRun{fn: fn, n: n, blocks: blocks}
	p.cur.Store(r)
	for _, w := range p.wake {
		select {
		case w <- struct{}{}:
		default: // already awake or about to be
		}
	}
	t0 := time.Now()
	mine := r.work()
	var waitFrom time.Time
	stalled := false
	for i := 1; r.done.Load() != int64(blocks); i++ {
		if i%64 == 0 {
			if waitFrom.IsZero() {
				waitFrom = time.Now()
			} else if !stalled {
				own := waitFrom.Sub(t0) / time.Duration(max(mine, 1))
				stalled = isStall(time.Since(waitFrom), own)
			}
			goruntime.Gosched()
		}
	}
	p.noteStall(stalled)
	return r.err
}

// isStall reports whether waiting wait for a helper's block, after the caller's own blocks took
// own each on average, is a stall (see stallMin).
func isStall(wait, own time.Duration) bool {
	return wait > stallMin && wait > stallFactor*own
}

// noteStall updates the back-off after a parallel run: a stall makes the caller run the next
// p.backoff runs alone and doubles p.backoff (up to soloMax) for the next stall; a run without
// one resets p.backoff to soloMin.
func (p *pool) noteStall(stalled bool) {
	if !stalled {
		p.backoff = soloMin
		return
	}
	p.solo = max(p.backoff, soloMin)
	p.backoff = min(2*p.solo, soloMax)
}

// work claims and computes blocks of r until none is left, and returns how many it computed.
func (r *poolRun) work() int {
	did := 0
	for {
		b := int(r.next.Add(1) - 1)
		if b >= r.blocks {
			return did
		}
		did++
		if err := r.fn(b*r.n/r.blocks, (b+1)*r.n/r.blocks); err != nil {
			r.mu.Lock()
			if r.err == nil || b < r.errAt {
				r.err, r.errAt = err, b
			}
			r.mu.Unlock()
		}
		r.done.Add(1)
	}
}

// helper works on each run it sees until the pool is closed: after a run it polls for a new one
// for spinFor, then parks on wake.
func (p *pool) helper(wake chan struct{}) {
	var last *poolRun
	for {
		start := time.Now()
		for i := 1; ; i++ {
			if p.quit.Load() {
				return
			}
			if r := p.cur.Load(); r != last {
				last = r
				if r.next.Load() < int64(r.blocks) {
					r.claimed.Store(true)
					r.work()
				}
				start = time.Now()
				continue
			}
			if i%64 == 0 {
				if time.Since(start) > spinFor {
					break
				}
				goruntime.Gosched()
			}
		}
		<-wake
	}
}

// close stops the helpers; the pool must not be used after.
func (p *pool) close() {
	p.quit.Store(true)
	for _, w := range p.wake {
		select {
		case w <- struct{}{}:
		default:
		}
	}
	p.wake = nil
	p.threads = 1
}
