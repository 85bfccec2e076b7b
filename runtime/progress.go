package runtime

import (
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// DefaultProgressAfter is the prefill time from which the command line shows a progress bar
// (GenerateOptions.ProgressAfter): shorter prefills show none.
const DefaultProgressAfter = 2 * time.Second

// Chunk sizes of a prefill that reports progress: the first chunk, the bounds of the later ones,
// and the time a later chunk aims at (sized from the rate measured so far). Under the bit-exact
// contract the chunks give the logits and the KV cache of one Prefill call, bit for bit.
const (
	progressFirstChunk  = 8
	progressMaxChunk    = 512
	progressChunkTarget = 250 * time.Millisecond
)

// tokenProgress is a progress bar of tokens on w that appears only once the work done so far, or
// the whole of it projected from the rate so far, takes at least after.
type tokenProgress struct {
	w     io.Writer
	after time.Duration
	desc  string
	total int
	done  int
	start time.Time
	bar   *progressbar.ProgressBar
}

// newTokenProgress returns the progress of total tokens of work described by desc, or nil (which
// reports nothing) when w is nil.
func newTokenProgress(w io.Writer, after time.Duration, desc string, total int) *tokenProgress {
	if w == nil {
		return nil
	}
	return &tokenProgress{w: w, after: after, desc: desc, total: total, start: time.Now()}
}

// add counts n more tokens done, showing the bar once the work is long enough.
func (p *tokenProgress) add(n int) {
	if p == nil {
		return
	}
	p.done += n
	if p.bar != nil {
		_ = p.bar.Add(n)
		return
	}
	if p.done <= 0 || p.done >= p.total {
		return
	}
	elapsed := time.Since(p.start)
	projected := time.Duration(float64(elapsed) * float64(p.total) / float64(p.done))
	if elapsed < p.after && projected < p.after {
		return
	}
	p.bar = progressbar.NewOptions(p.total, progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(p.desc), progressbar.OptionShowCount(), progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("tok"), progressbar.OptionSetPredictTime(true),
		progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true))
	_ = p.bar.Add(p.done)
}

// clear erases the bar from its line, if it is shown, so that other output can be written there;
// the next add draws it again.
func (p *tokenProgress) clear() {
	if p != nil && p.bar != nil {
		_ = p.bar.Clear()
	}
}

// finish completes and clears the bar, if it was shown.
func (p *tokenProgress) finish() {
	if p != nil && p.bar != nil {
		_ = p.bar.Finish()
	}
}

// prefillReporting is b.Prefill(tokens, allLogits). With a progress p it prefills in chunks —
// progressFirstChunk tokens, then as many as take about progressChunkTarget at the rate measured
// so far — and counts each chunk done into p; the logits are those of one call (all rows
// concatenated, or the last token's), as are the cache contents, under the bit-exact contract
// (TestChunkedPrefillEqualsOnePrefill). Tokens outside the vocabulary go to one Prefill call, so
// that its error leaves the cache as it was.
func prefillReporting(b Backend, tokens []int, allLogits bool, p *tokenProgress) ([]float32, error) {
	if p == nil || len(tokens) <= progressFirstChunk {
		logits, err := b.Prefill(tokens, allLogits)
		if err == nil {
			p.add(len(tokens))
		}
		return logits, err
	}
	vocab := b.Config().VocabSize
	for _, t := range tokens {
		if t < 0 || t >= vocab {
			return b.Prefill(tokens, allLogits)
		}
	}
	var all, logits []float32
	chunk := progressFirstChunk
	for lo := 0; lo < len(tokens); {
		hi := min(len(tokens), lo+chunk)
		t0 := time.Now()
		l, err := b.Prefill(tokens[lo:hi], allLogits)
		if err != nil {
			return nil, err
		}
		if allLogits {
			all = append(all, l...)
		} else {
			logits = l
		}
		p.add(hi - lo)
		if d := time.Since(t0); d > 0 {
			chunk = int(float64(hi-lo) * float64(progressChunkTarget) / float64(d))
		} else {
			chunk = progressMaxChunk
		}
		chunk = min(max(chunk, progressFirstChunk), progressMaxChunk)
		lo = hi
	}
	if allLogits {
		return all, nil
	}
	return logits, nil
}
