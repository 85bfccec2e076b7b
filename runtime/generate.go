package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/bitgpu/bitgpu/model"
)

// ErrContextFull is wrapped by the errors Generate, Chat and Perplexity return when tokens do not
// fit the KV cache (the context length).
var ErrContextFull = errors.New("context full")

// StopReason says why Generate stopped.
type StopReason string

// Stop reasons.
const (
	// StopEOS: the sampler picked the end-of-sequence or end-of-turn token (not emitted).
	StopEOS StopReason = "eos"
	// StopLength: GenerateOptions.MaxTokens tokens were generated.
	StopLength StopReason = "length"
	// StopContext: the KV cache is full, so no further token can be fed back.
	StopContext StopReason = "context"
	// StopCanceled: GenerateOptions.Ctx was canceled (Generate then returns its error).
	StopCanceled StopReason = "canceled"
	// StopString: the text reached one of GenerateOptions.Stop.
	StopString StopReason = "stop"
)

// GenerateOptions controls Generate.
type GenerateOptions struct {
	// MaxTokens is the most tokens to generate; a negative value means no limit (generation
	// stops at EOS/EOT or the context end). 0 generates nothing after the prefill.
	MaxTokens int
	// Context is the KV cache capacity in tokens; 0 means the backend's Config().ContextLength.
	// Set it when the backend was built with a smaller cache than the model's context length.
	Context int
	// Sampler picks each token; nil means greedy (temperature 0). It is advanced, and every
	// prompt and generated token is passed to its Accept, so a chat can keep one Sampler.
	Sampler *Sampler
	// IgnoreEOS keeps generating after the EOS or EOT token (which is then emitted as text
	// like any control token: not at all).
	IgnoreEOS bool
	// Emit receives the generated text as it becomes complete (never half a UTF-8 character;
	// control tokens give no text). An error from Emit stops generation and is returned. nil
	// discards the text.
	Emit func(text string) error
	// Stop lists stop strings: generation ends as soon as the text contains one (StopString);
	// the text up to it is emitted, the stop string and anything after it is not. Text that may
	// be the start of a stop string is held back until it is not. Empty strings are ignored.
	Stop []string
	// Ctx, when not nil, is checked before the prefill and after each generated token is emitted:
	// once it is canceled generation stops with StopCanceled and its error (context.Canceled or
	// DeadlineExceeded, wrapped), the last token generated but not fed back, as at StopLength.
	// A running Prefill or Decode call is not interrupted.
	Ctx context.Context
	// Progress, when not nil, receives a progress bar of the prompt tokens prefilled once the
	// prefill has taken, or is projected to take, ProgressAfter (the command line passes a
	// terminal's stderr and DefaultProgressAfter). The prompt is then prefilled in chunks, which
	// gives the same logits and KV cache bit for bit as one Prefill call.
	Progress      io.Writer
	ProgressAfter time.Duration
	// Sampled, when not nil, is called with each generated token (a final EOS/EOT included) and
	// the logits row it was sampled from, before its text is emitted; the row is only valid
	// during the call. An error from it stops generation and is returned. Setting it turns off
	// the device-side greedy and candidate paths (GreedyDecoder, CandidateDecoder), which return
	// no logits row.
	Sampled func(token int, logits []float32) error
}

// GenerateStats reports one Generate call. Times are wall-clock.
type GenerateStats struct {
	PromptTokens    int           // tokens prefilled
	PrefillTime     time.Duration // time of the Prefill call
	Tokens          []int         // generated token ids, including a final EOS/EOT
	Text            string        // the emitted text
	DecodeCalls     int           // Decode calls (each feeds one generated token back)
	DecodeTime      time.Duration // total time of the Decode calls and the sampling after them
	Stop            StopReason
	ContextCapacity int // the KV cache capacity used for the context check
}

// PrefillTokensPerSecond is PromptTokens / PrefillTime (0 when nothing was timed).
func (s GenerateStats) PrefillTokensPerSecond() float64 {
	return rate(s.PromptTokens, s.PrefillTime)
}

// DecodeTokensPerSecond is DecodeCalls / DecodeTime: the steady-state generation speed, one
// token per Decode (0 when there was no Decode call).
func (s GenerateStats) DecodeTokensPerSecond() float64 { return rate(s.DecodeCalls, s.DecodeTime) }

// rate is n per second over d, 0 when d or n is 0.
func rate(n int, d time.Duration) float64 {
	if n == 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// EncodePrompt tokenizes a prompt for generation: tok's BOS id first when tok.AddBOS() (and the
// tokenizer has one), then tok.Encode(text, true) — special-token text such as "<|eot_id|>" in
// the prompt becomes its id, as llama.cpp does for prompts.
func EncodePrompt(tok model.Tokenizer, text string) []int {
	var ids []int
	if tok.AddBOS() && tok.BOS() >= 0 {
		ids = append(ids, tok.BOS())
	}
	return append(ids, tok.Encode(text, true)...)
}

// GreedyDecoder is implemented by backends that can choose the greedy next token themselves:
// DecodeGreedy appends token to the KV cache and returns the most likely next token (lowest id on
// ties). The Vulkan backend does it on the device, so only the token id comes back. Generate uses
// it when sampling is plain greedy (temperature 0, no repetition penalty).
type GreedyDecoder interface {
	DecodeGreedy(token int) (int, error)
}

// CandidateDecoder is implemented by backends that can select the sampler's candidates
// themselves: DecodeCandidates appends token to the KV cache and returns the n best logits of the
// next token (1 <= n <= MaxSampleCandidates) with their ids, in the candidate order
// (TopCandidates: logit descending by CandidateKey, ties to the lower id), the logits bit for bit
// those Decode would return. The Vulkan backend selects them on the device, so 8n bytes come back
// per token instead of the whole row. Generate uses it when the sampler can pick from candidates
// (Sampler.CandidateCount > 0: top-k sampling, or greedy with a repetition penalty >= 1) and
// nothing needs the whole row (GenerateOptions.Sampled is nil); Sampler.SampleCandidates then
// gives the token Sample would give from the row.
type CandidateDecoder interface {
	DecodeCandidates(token, n int) (ids []int, logits []float32, err error)
}

// Generate appends prompt to b's KV cache (at b.Pos(); call b.Reset first for a fresh sequence),
// then samples up to opts.MaxTokens tokens, feeding each one back with Decode, and streams their
// text through opts.Emit with a model.StreamDecoder. It stops when:
//   - the sampler picks tok's EOS or EOT id (unless opts.IgnoreEOS): StopEOS; that token is
//     returned in Tokens but neither emitted nor fed back;
//   - MaxTokens tokens were generated: StopLength; the last one is not fed back;
//   - the cache is full, so the last generated token cannot be fed back: StopContext;
//   - the text reached one of opts.Stop: StopString; the token that completed it is the last
//     one and is not fed back, and the text stops before the stop string.
//
// The cache therefore holds the prompt and every generated token but the last. Errors: an empty
// prompt, a prompt that does not fit the cache (wraps ErrContextFull, before any work), and errors
// from the backend, the sampler or Emit; the stats gathered so far are returned with them.
func Generate(b Backend, tok model.Tokenizer, prompt []int, opts GenerateOptions) (st GenerateStats, err error) {
	st = GenerateStats{PromptTokens: len(prompt), ContextCapacity: opts.Context}
	if b == nil || tok == nil {
		return st, fmt.Errorf("generate: nil backend or tokenizer")
	}
	if st.ContextCapacity <= 0 {
		st.ContextCapacity = b.Config().ContextLength
	}
	if len(prompt) == 0 {
		return st, fmt.Errorf("generate: empty prompt (no tokens to start from)")
	}
	if free := st.ContextCapacity - b.Pos(); len(prompt) > free {
		return st, fmt.Errorf("generate: prompt of %d tokens does not fit the context of %d tokens (%d in use): %w",
			len(prompt), st.ContextCapacity, b.Pos(), ErrContextFull)
	}
	s := opts.Sampler
	if s == nil {
		if s, err = NewSampler(SamplerOptions{}); err != nil {
			return st, err
		}
	}
	for _, t := range prompt {
		s.Accept(t)
	}
	dec := model.NewStreamDecoder(tok)
	out := func(text string) error {
		if text == "" {
			return nil
		}
		st.Text += text
		if opts.Emit == nil {
			return nil
		}
		return opts.Emit(text)
	}
	stops := slices.DeleteFunc(slices.Clone(opts.Stop), func(s string) bool { return s == "" })
	held := "" // text that may begin a stop string
	stopped := false
	emit := func(text string) error {
		if len(stops) == 0 {
			return out(text)
		}
		buf := held + text
		cut := -1
		for _, s := range stops {
			if i := strings.Index(buf, s); i >= 0 && (cut < 0 || i < cut) {
				cut = i
			}
		}
		if cut >= 0 {
			stopped, held = true, ""
			return out(buf[:cut])
		}
		keep := 0 // the longest suffix of buf that is a proper prefix of a stop string
		for _, s := range stops {
			for k := min(len(s)-1, len(buf)); k > keep; k-- {
				if strings.HasSuffix(buf, s[:k]) {
					keep = k
					break
				}
			}
		}
		held = buf[len(buf)-keep:]
		return out(buf[:len(buf)-keep])
	}

	canceled := func() error {
		if opts.Ctx == nil || opts.Ctx.Err() == nil {
			return nil
		}
		st.Stop = StopCanceled
		return fmt.Errorf("generate: %w", context.Cause(opts.Ctx))
	}
	if err := canceled(); err != nil {
		return st, err
	}
	start := time.Now()
	bar := newTokenProgress(opts.Progress, opts.ProgressAfter, "prefill", len(prompt))
	logits, err := prefillReporting(b, prompt, false, bar)
	bar.finish()
	st.PrefillTime = time.Since(start)
	if err != nil {
		return st, fmt.Errorf("generate: prefill: %w", err)
	}
	var decodeStart time.Time
	defer func() {
		if !decodeStart.IsZero() {
			st.DecodeTime = time.Since(decodeStart)
		}
	}()
	// A plain greedy sampler on a backend that can choose on the device skips the logits.
	greedy, onDevice := b.(GreedyDecoder)
	so := s.Options()
	onDevice = onDevice && so.Temperature == 0 && so.RepeatPenalty == 1 && opts.Sampled == nil
	// Otherwise a backend that selects candidates on the device returns only those when the
	// sampler's options allow (Sampler.CandidateCount), chosen per token: the penalty window
	// changes the count.
	candDec, candidates := b.(CandidateDecoder)
	candidates = candidates && !onDevice && opts.Sampled == nil
	vocab := b.Config().VocabSize
	var candIDs []int // the candidates of the next token when the last step returned candidates
	var candLogits []float32
	pending := -1
	for opts.MaxTokens < 0 || len(st.Tokens) < opts.MaxTokens {
		id := pending
		if id < 0 && candIDs != nil {
			if id, err = s.SampleCandidates(candIDs, candLogits, vocab); err != nil {
				return st, fmt.Errorf("generate: token %d: %w", len(st.Tokens), err)
			}
		} else if id < 0 {
			if id, err = s.Sample(logits); err != nil {
				return st, fmt.Errorf("generate: token %d: %w", len(st.Tokens), err)
			}
		}
		if opts.Sampled != nil {
			if err := opts.Sampled(id, logits); err != nil {
				return st, err
			}
		}
		s.Accept(id)
		st.Tokens = append(st.Tokens, id)
		if !opts.IgnoreEOS && (id == tok.EOS() || id == tok.EOT()) && id >= 0 {
			st.Stop = StopEOS
			break
		}
		if err := emit(dec.Push(id)); err != nil {
			return st, err
		}
		if stopped {
			st.Stop = StopString
			break
		}
		if opts.MaxTokens >= 0 && len(st.Tokens) == opts.MaxTokens {
			break
		}
		if b.Pos() >= st.ContextCapacity {
			st.Stop = StopContext
			break
		}
		// Canceled: like StopLength, the last token is generated but not fed back.
		if err := canceled(); err != nil {
			return st, err
		}
		if decodeStart.IsZero() {
			decodeStart = time.Now()
		}
		candIDs = nil
		n := 0 // candidates the next Sample needs (after Accept(id): the window includes id)
		if candidates {
			n = s.CandidateCount(vocab)
		}
		switch {
		case onDevice:
			pending, err = greedy.DecodeGreedy(id)
		case n > 0:
			candIDs, candLogits, err = candDec.DecodeCandidates(id, n)
		default:
			logits, err = b.Decode(id)
		}
		if err != nil {
			return st, fmt.Errorf("generate: decode at position %d: %w", b.Pos(), err)
		}
		st.DecodeCalls++
	}
	if st.Stop == "" {
		st.Stop = StopLength
	}
	if stopped {
		return st, nil
	}
	if err := emit(dec.Flush()); err != nil {
		return st, err
	}
	if stopped {
		st.Stop = StopString
		return st, nil
	}
	return st, out(held)
}
