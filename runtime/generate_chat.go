package runtime

import (
	"fmt"
	"slices"
	"strings"

	"github.com/bitgpu/bitgpu/model"
)

// Chat is a multi-turn conversation over one Backend. It renders turns with the model's chat
// template (model.RenderChat) and keeps the KV cache between turns: after a reply it prefills
// only what is new — the reply's last token when it was not a stop token, the end-of-turn text
// of the template ("<|eot_id|>") and the next user turn with the assistant's generation prompt —
// so the model sees its own sampled tokens, as llama.cpp's interactive chat does. When that does
// not fit the cache, it re-renders the conversation from the start, dropping the oldest
// user/assistant exchanges (never the system message) until it fits, and prefills it from an
// empty cache. Not safe for concurrent use.
type Chat struct {
	b        Backend
	tok      model.Tokenizer
	template string
	format   model.ChatFormat
	opts     GenerateOptions
	msgs     []model.ChatMessage
	cache    []int // token ids in the KV cache, in order
	last     int   // the reply's last sampled token (not in the cache), -1 when none
	lastStop bool  // last is a stop token (EOS/EOT), so it is not fed back
	closing  string
	dropped  int // messages the last Send dropped to fit the context

	// ParseSpecial makes special-token text inside messages (system and user) the special token
	// (chat --special). False, the default, keeps it plain text so typed "<|eot_id|>System: ..."
	// cannot forge a turn; the template's own markers are special either way.
	ParseSpecial bool
}

// NewChat returns a Chat over b with tok, the chat template template (the model file's
// tokenizer.chat_template; see model.DetectChatFormat) and an optional system message. opts is
// used for every reply (its Sampler, when set, carries on across turns); opts.Emit streams the
// replies. It resets b. It returns an error when the template's turns cannot be split into a
// generation prompt and an end-of-turn suffix.
func NewChat(b Backend, tok model.Tokenizer, template, system string, opts GenerateOptions) (*Chat, error) {
	if b == nil || tok == nil {
		return nil, fmt.Errorf("chat: nil backend or tokenizer")
	}
	f := model.DetectChatFormat(template)
	// The end-of-turn text is what the template writes after an assistant message's content: the
	// rendering of an assistant turn with a sentinel content is the generation prompt, the
	// sentinel, then that suffix.
	const sentinel = "\x01"
	gen, err := f.Render(nil, true)
	if err != nil {
		return nil, err
	}
	turn, err := f.Render([]model.ChatMessage{{Role: "assistant", Content: sentinel}}, false)
	if err != nil {
		return nil, err
	}
	closing, ok := strings.CutPrefix(turn, gen+sentinel)
	if !ok {
		return nil, fmt.Errorf("chat: template %s: an assistant turn %q does not start with the generation prompt %q", f, turn, gen)
	}
	if opts.Sampler == nil {
		if opts.Sampler, err = NewSampler(SamplerOptions{}); err != nil {
			return nil, err
		}
	}
	c := &Chat{b: b, tok: tok, template: template, format: f, opts: opts, last: -1, closing: closing}
	if strings.TrimSpace(system) != "" {
		c.msgs = append(c.msgs, model.ChatMessage{Role: "system", Content: system})
	}
	b.Reset()
	return c, nil
}

// Options returns the generation options used for every reply.
func (c *Chat) Options() GenerateOptions { return c.opts }

// SetOptions replaces the generation options of the following replies (e.g. a new Emit or Ctx
// per reply); a nil Sampler keeps the current one.
func (c *Chat) SetOptions(o GenerateOptions) {
	if o.Sampler == nil {
		o.Sampler = c.opts.Sampler
	}
	c.opts = o
}

// Reset starts a new conversation: every message but the system message is forgotten and the
// backend's cache emptied (the Sampler carries on).
func (c *Chat) Reset() {
	if len(c.msgs) > 0 && c.msgs[0].Role == "system" {
		c.msgs = c.msgs[:1]
	} else {
		c.msgs = c.msgs[:0]
	}
	c.cache, c.last, c.lastStop, c.dropped = c.cache[:0], -1, false, 0
	c.b.Reset()
}

// Dropped is how many of the oldest user and assistant messages the last Send dropped so that
// the conversation fits the context (0 when nothing was dropped).
func (c *Chat) Dropped() int { return c.dropped }

// Messages returns the conversation so far (system, user and assistant messages).
func (c *Chat) Messages() []model.ChatMessage { return slices.Clone(c.msgs) }

// CachedTokens returns the token ids the KV cache holds, in order.
func (c *Chat) CachedTokens() []int { return slices.Clone(c.cache) }

// Send adds a user message, generates the assistant's reply (streamed through the options' Emit)
// and records it in the conversation. The reply ends at EOS/EOT, at the options' MaxTokens, or at
// the context end. It returns the generation stats (PromptTokens counts the tokens prefilled for
// this turn). Errors: a message that does not fit the context even alone with the system message
// (wraps ErrContextFull), and backend, sampler or Emit errors.
func (c *Chat) Send(user string) (GenerateStats, error) {
	capacity := c.opts.Context
	if capacity <= 0 {
		capacity = c.b.Config().ContextLength
	}
	userMsg := model.ChatMessage{Role: "user", Content: user}
	c.dropped = 0
	var prompt []int
	if len(c.cache) > 0 {
		text, spans, err := c.format.RenderSpans([]model.ChatMessage{userMsg}, true)
		if err != nil {
			return GenerateStats{}, err
		}
		if c.last >= 0 && !c.lastStop {
			prompt = append(prompt, c.last)
		}
		if c.ParseSpecial {
			spans = nil
		}
		for i := range spans { // the text is encoded after the closing marker
			spans[i].Start += len(c.closing)
			spans[i].End += len(c.closing)
		}
		prompt = append(prompt, c.tok.EncodeTemplate(c.closing+text, spans)...)
		if c.b.Pos() != len(c.cache) || len(c.cache)+len(prompt) >= capacity {
			prompt = nil // re-render from the start
		}
	}
	if prompt == nil {
		msgs := append(slices.Clone(c.msgs), userMsg)
		first := 0 // index of the first droppable message
		if len(msgs) > 0 && msgs[0].Role == "system" {
			first = 1
		}
		for {
			encode := model.EncodeChat
			if c.ParseSpecial {
				encode = model.EncodeChatSpecial
			}
			ids, err := encode(c.tok, c.template, msgs, true)
			if err != nil {
				return GenerateStats{}, err
			}
			if len(ids) < capacity {
				prompt = ids
				break
			}
			if len(msgs)-first <= 1 {
				return GenerateStats{}, fmt.Errorf("chat: the message needs %d tokens, the context holds %d: %w", len(ids), capacity, ErrContextFull)
			}
			// Drop the oldest exchange: a user message and the assistant reply after it.
			drop := 1
			if len(msgs)-first > 2 && msgs[first+1].Role == "assistant" {
				drop = 2
			}
			msgs = slices.Delete(msgs, first, first+drop)
			c.dropped += drop
		}
		c.msgs = msgs[:len(msgs)-1]
		c.b.Reset()
		c.cache = c.cache[:0]
	}
	c.msgs = append(c.msgs, userMsg)
	c.last, c.lastStop = -1, false
	st, err := Generate(c.b, c.tok, prompt, c.opts)
	c.cache = append(c.cache, prompt...)
	if n := len(st.Tokens); n > 0 {
		c.cache = append(c.cache, st.Tokens[:n-1]...)
		c.last = st.Tokens[n-1]
		c.lastStop = st.Stop == StopEOS
	}
	if c.b.Pos() != len(c.cache) {
		c.cache = c.cache[:0] // out of step after an error: the next turn re-renders
		c.b.Reset()
	}
	c.msgs = append(c.msgs, model.ChatMessage{Role: "assistant", Content: st.Text})
	return st, err
}
