package bitgpu

import (
	"context"
	"errors"
	"iter"
	"math/rand/v2"

	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// GenerateOptions are the sampling and stopping options of Generate, Stream and Chat; the zero
// value is greedy decoding to the end of text or of the context.
type GenerateOptions struct {
	// MaxTokens is the most tokens to generate; 0 or negative: no limit.
	MaxTokens int
	// Temperature 0 is greedy; otherwise the repeat penalty, temperature, top-k, top-p, min-p and
	// one draw from a PCG generator seeded with Seed (runtime.Sampler documents the order).
	Temperature   float64
	TopK          int     // 0 keeps all
	TopP          float64 // 0 or 1 keeps all
	MinP          float64 // 0 keeps all
	RepeatPenalty float64 // 0 or 1 is off
	// Seed seeds the sampler; -1 draws one (Result.Seed reports it).
	Seed int64
	// Stop strings end the text before the first one that appears.
	Stop []string
	// IgnoreEOS keeps generating after the end-of-text and end-of-turn tokens.
	IgnoreEOS bool
}

// Result is one generation: the text, the token ids (a final end-of-text token included), the
// number of prompt tokens, why it stopped ("eos", "length", "context", "stop", "canceled"), the
// seed used, and the prefill and decode speeds in tokens per second.
type Result struct {
	Text          string
	Tokens        []int
	PromptTokens  int
	Stop          string
	Seed          uint64
	PrefillPerSec float64
	DecodePerSec  float64
}

// sampler builds the runtime sampler of o.
func (o GenerateOptions) sampler() (*runtime.Sampler, uint64, error) {
	seed := uint64(o.Seed)
	if o.Seed < 0 {
		seed = rand.Uint64() >> 1
	}
	s, err := runtime.NewSampler(runtime.SamplerOptions{Temperature: o.Temperature, TopK: o.TopK, TopP: o.TopP,
		MinP: o.MinP, RepeatPenalty: o.RepeatPenalty, Seed: seed})
	return s, seed, err
}

// runtimeOptions converts o for runtime.Generate.
func (o GenerateOptions) runtimeOptions(ctx context.Context, capacity int, s *runtime.Sampler, emit func(string) error) runtime.GenerateOptions {
	max := o.MaxTokens
	if max <= 0 {
		max = -1
	}
	return runtime.GenerateOptions{MaxTokens: max, Context: capacity, Sampler: s, IgnoreEOS: o.IgnoreEOS,
		Stop: o.Stop, Ctx: ctx, Emit: emit}
}

// result converts runtime stats.
func result(st runtime.GenerateStats, seed uint64) Result {
	return Result{Text: st.Text, Tokens: st.Tokens, PromptTokens: st.PromptTokens, Stop: string(st.Stop), Seed: seed,
		PrefillPerSec: st.PrefillTokensPerSecond(), DecodePerSec: st.DecodeTokensPerSecond()}
}

// Generate continues prompt (with BOS when the model asks for one; special-token text in it is
// parsed) from an empty cache and calls onText (when not nil) with the text as it is generated,
// never half a UTF-8 character. It returns the whole result; an error from onText, the backend
// or a cancelled ctx (context.Canceled, with the result so far) ends it early.
func (m *Model) Generate(ctx context.Context, prompt string, o GenerateOptions, onText func(string) error) (Result, error) {
	s, seed, err := o.sampler()
	if err != nil {
		return Result{}, err
	}
	ids := runtime.EncodePrompt(m.m.Tokenizer, prompt)
	if len(ids) == 0 {
		return Result{}, errors.New("generate: the prompt is empty and the model adds no BOS token")
	}
	m.b.Reset()
	st, err := runtime.Generate(m.b, m.m.Tokenizer, ids, o.runtimeOptions(ctx, m.ctx, s, onText))
	return result(st, seed), err
}

// Stream is Generate as an iterator of text pieces; a final non-nil error (if any) is yielded
// with an empty piece. Breaking out of the loop stops generation.
func (m *Model) Stream(ctx context.Context, prompt string, o GenerateOptions) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		stopped := errors.New("stopped by the consumer")
		_, err := m.Generate(ctx, prompt, o, func(text string) error {
			if !yield(text, nil) {
				return stopped
			}
			return nil
		})
		if err != nil && !errors.Is(err, stopped) {
			yield("", err)
		}
	}
}

// Chat is a conversation with the model's chat template over the Model's KV cache, which it
// keeps between turns (only the new turn is processed). Only one Chat or Generate may use a
// Model at a time.
type Chat struct {
	c    *runtime.Chat
	seed uint64
	o    GenerateOptions
	m    *Model
}

// Chat starts a conversation with an optional system message; o applies to every reply (its
// sampler carries on across turns).
func (m *Model) Chat(system string, o GenerateOptions) (*Chat, error) {
	s, seed, err := o.sampler()
	if err != nil {
		return nil, err
	}
	c, err := runtime.NewChat(m.b, m.m.Tokenizer, m.m.Config.ChatTemplate, system, o.runtimeOptions(nil, m.ctx, s, nil))
	if err != nil {
		return nil, err
	}
	return &Chat{c: c, seed: seed, o: o, m: m}, nil
}

// Send adds a user message (special-token text in it stays plain text) and generates the reply,
// calling onText (when not nil) as it streams. A cancelled ctx stops the reply (the part so far
// stays in the conversation) with context.Canceled.
func (c *Chat) Send(ctx context.Context, msg string, onText func(string) error) (Result, error) {
	opts := c.c.Options()
	opts.Ctx, opts.Emit = ctx, onText
	c.c.SetOptions(opts)
	st, err := c.c.Send(msg)
	return result(st, c.seed), err
}

// Reset starts a new conversation (the system message stays).
func (c *Chat) Reset() { c.c.Reset() }

// Messages returns the conversation so far.
func (c *Chat) Messages() []model.ChatMessage { return c.c.Messages() }

// Perplexity evaluates text (tokenized without BOS) in windows of window predictions (0: 512 or
// the cache size if smaller), each from an empty cache, over at most chunks windows (0: all that
// fit), and returns exp(mean NLL) — the `bitgpu perplexity` definition. A cancelled ctx stops it
// before the next window.
func (m *Model) Perplexity(ctx context.Context, text string, window, chunks int) (float64, error) {
	if window <= 0 {
		window = min(512, m.ctx)
	}
	tokens := m.m.Tokenizer.Encode(text, false)
	res, err := runtime.PerplexityWith(m.b, tokens, window, runtime.PerplexityOptions{Chunks: chunks, Ctx: ctx})
	return res.PPL, err
}
