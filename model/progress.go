package model

import (
	"io"
	"sync"
)

// Progress is one report from a long model operation (WriteSynthetic, ConvertHFProgress): Done of
// Total units of Stage are finished. The units are bytes of the output file when Bytes is set and
// tensors otherwise.
type Progress struct {
	Stage       string // "converting", "encoding" (tensors) or "writing" (bytes)
	Done, Total int64
	Bytes       bool
}

// ProgressFunc receives the Progress reports of an operation. Calls are serialized; within a
// stage Done never decreases and the stage's last report has Done == Total.
type ProgressFunc func(Progress)

// tensorProgress reports tensors done of total for stage through fn, safe for concurrent use;
// a nil fn reports nothing.
type tensorProgress struct {
	mu    sync.Mutex
	fn    ProgressFunc
	stage string
	done  int64
	total int64
}

// add counts one more tensor done.
func (p *tensorProgress) add() {
	if p == nil || p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done++
	p.fn(Progress{Stage: p.stage, Done: p.done, Total: p.total})
}

// progressWriter passes writes to w and reports the bytes written so far through fn as stage
// "writing" once total is known (total > 0).
type progressWriter struct {
	w     io.Writer
	fn    ProgressFunc
	done  int64
	total int64
}

// Write writes p to w and reports the bytes written so far.
func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	if p.total > 0 {
		p.fn(Progress{Stage: "writing", Done: min(p.done, p.total), Total: p.total, Bytes: true})
	}
	return n, err
}

// withProgress wraps the fill function of WriteFileAtomic so that the bytes it writes are
// reported through fn (nil: fill unchanged); fill calls setTotal with the file size once it knows
// it.
func withProgress(fn ProgressFunc, fill func(w io.Writer, setTotal func(int64)) error) func(w io.Writer) error {
	return func(w io.Writer) error {
		if fn == nil {
			return fill(w, func(int64) {})
		}
		pw := &progressWriter{w: w, fn: fn}
		return fill(pw, func(total int64) { pw.total = total })
	}
}
