package runtime

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"
)

// PerplexityResult reports a Perplexity run.
type PerplexityResult struct {
	PPL         float64       // exp(mean NLL over all windows), in nats before exp
	WindowNLL   []float64     // mean negative log-likelihood (nats) of each window's N predictions
	Window      int           // N, predictions per window
	Predictions int           // len(WindowNLL) * N
	Time        time.Duration // wall-clock time of all Prefill calls and log-softmaxes
}

// MeanNLL is the mean negative log-likelihood per predicted token in nats (log(PPL)).
func (r PerplexityResult) MeanNLL() float64 { return math.Log(r.PPL) }

// Windows returns how many whole perplexity windows of n predictions fit in nTokens tokens:
// window w needs tokens [w*n, w*n+n], so K windows need K*n+1 tokens. It is 0 when n <= 0.
func Windows(nTokens, n int) int {
	if n <= 0 || nTokens < n+1 {
		return 0
	}
	return (nTokens - 1) / n
}

// Perplexity is PerplexityProgress without a progress callback.
func Perplexity(b Backend, tokens []int, n, chunks int) (PerplexityResult, error) {
	return PerplexityProgress(b, tokens, n, chunks, nil)
}

// PerplexityProgress measures perplexity over tokens (tokenized without BOS) in windows of n
// predictions, exactly as bitgpu's command-line contract defines it: window w (0..K-1) is the
// n+1 tokens [w*n, w*n+n]; it is evaluated from an empty KV cache (b.Reset) by prefilling its
// first n tokens with all logits, and its NLL is the mean over i = 0..n-1 of
// −log softmax(logits_i)[tokens[w*n+i+1]], computed in float64 (log-sum-exp with the maximum
// subtracted). The result is exp(mean of the window NLLs). K = chunks, or when chunks <= 0 as
// many whole windows as fit (Windows). onWindow, when not nil, is called after each window with
// its index and NLL. The backend's cache must hold n tokens.
//
// Errors: n < 1; a text too short for one window (fewer than n+1 tokens); chunks larger than
// the windows that fit; and backend errors (an out-of-range token id, a window beyond the cache:
// wraps ErrContextFull when n exceeds the context length).
func PerplexityProgress(b Backend, tokens []int, n, chunks int, onWindow func(w int, nll float64)) (PerplexityResult, error) {
	return PerplexityWith(b, tokens, n, PerplexityOptions{Chunks: chunks, OnWindow: onWindow})
}

// PerplexityOptions configure PerplexityWith.
type PerplexityOptions struct {
	// Chunks is the number of windows K (<= 0: as many as fit).
	Chunks int
	// OnWindow, when not nil, is called after each window with its index and NLL.
	OnWindow func(w int, nll float64)
	// Progress and ProgressAfter show a progress bar of the tokens evaluated over all windows, as
	// GenerateOptions.Progress does for a prompt (the windows are then prefilled in chunks: the
	// same logits bit for bit).
	Progress      io.Writer
	ProgressAfter time.Duration
	// Ctx, when not nil, is checked before each window: once it is canceled PerplexityWith
	// returns its error (wrapped), with the windows done so far in WindowNLL.
	Ctx context.Context
}

// PerplexityWith is PerplexityProgress with the options of opts.
func PerplexityWith(b Backend, tokens []int, n int, opts PerplexityOptions) (PerplexityResult, error) {
	chunks, onWindow := opts.Chunks, opts.OnWindow
	res := PerplexityResult{Window: n}
	if b == nil {
		return res, fmt.Errorf("perplexity: nil backend")
	}
	if n < 1 {
		return res, fmt.Errorf("perplexity: window of %d tokens: must be at least 1", n)
	}
	if ctx := b.Config().ContextLength; ctx > 0 && n > ctx {
		return res, fmt.Errorf("perplexity: window of %d tokens exceeds the model's context length %d: %w", n, ctx, ErrContextFull)
	}
	fit := Windows(len(tokens), n)
	if fit == 0 {
		return res, fmt.Errorf("perplexity: text of %d tokens is too short for one window of %d predictions (needs %d tokens)", len(tokens), n, n+1)
	}
	k := fit
	if chunks > 0 {
		if chunks > fit {
			return res, fmt.Errorf("perplexity: %d windows asked, the text of %d tokens holds %d windows of %d predictions", chunks, len(tokens), fit, n)
		}
		k = chunks
	}
	vocab := b.Config().VocabSize
	start := time.Now()
	bar := newTokenProgress(opts.Progress, opts.ProgressAfter, "perplexity", k*n)
	defer bar.finish()
	var total float64
	for w := range k {
		if opts.Ctx != nil && opts.Ctx.Err() != nil {
			return res, fmt.Errorf("perplexity: %w", context.Cause(opts.Ctx))
		}
		win := tokens[w*n : w*n+n+1]
		b.Reset()
		logits, err := prefillReporting(b, win[:n], true, bar)
		if err != nil {
			return res, fmt.Errorf("perplexity: window %d: %w", w, err)
		}
		if len(logits) != n*vocab {
			return res, fmt.Errorf("perplexity: window %d: backend returned %d logits, want %d", w, len(logits), n*vocab)
		}
		var nll float64
		for i := range n {
			nll += NegLogLikelihood(logits[i*vocab:(i+1)*vocab], win[i+1])
		}
		nll /= float64(n)
		res.WindowNLL = append(res.WindowNLL, nll)
		total += nll
		if onWindow != nil {
			bar.clear() // the caller may print the window's line on the same terminal
			onWindow(w, nll)
		}
	}
	b.Reset()
	res.Time = time.Since(start)
	res.Predictions = k * n
	res.PPL = math.Exp(total / float64(k))
	return res, nil
}

// NegLogLikelihood returns −log softmax(logits)[target] in float64: log Σ_j exp(l_j − m) + m −
// l_target with m the largest logit. It is +Inf when target is outside logits or its logit is
// -Inf, and NaN when a logit is NaN.
func NegLogLikelihood(logits []float32, target int) float64 {
	if target < 0 || target >= len(logits) {
		return math.Inf(1)
	}
	m := math.Inf(-1)
	for _, l := range logits {
		m = math.Max(m, float64(l))
	}
	var s float64
	for _, l := range logits {
		s += math.Exp(float64(l) - m)
	}
	return math.Log(s) + m - float64(logits[target])
}
