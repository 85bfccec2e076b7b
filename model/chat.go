package model

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ChatMessage is one turn of a conversation. Role is "system", "user" or "assistant" (any
// non-empty role is rendered); Content is the text of the turn.
type ChatMessage struct {
	Role    string
	Content string
}

// ChatFormat is a chat prompt layout bitgpu renders itself: it does not run Jinja, it recognises
// which family a model's `tokenizer.chat_template` belongs to (DetectChatFormat).
type ChatFormat int

// Chat formats.
const (
	// ChatBitNet is the BitNet b1.58 2B4T layout (the chat_template of Microsoft's
	// bitnet-b1.58-2B-4T tokenizer_config.json, llama.cpp's "bitnet" template): each turn is the
	// role with its first letter upper-cased (Jinja `capitalize`), ": ", the content trimmed of
	// surrounding whitespace, and "<|eot_id|>"; the generation prompt is "Assistant: ".
	//
	//	System: You are helpful.<|eot_id|>User: Hi<|eot_id|>Assistant:
	ChatBitNet ChatFormat = iota
	// ChatLlama3 is the LLaMA-3 Instruct layout: "<|start_header_id|>" role "<|end_header_id|>\n\n"
	// trimmed content "<|eot_id|>" per turn; the generation prompt is the assistant header.
	ChatLlama3
)

// String names the format: "bitnet" or "llama3" (llama.cpp's template names).
func (f ChatFormat) String() string {
	switch f {
	case ChatBitNet:
		return "bitnet"
	case ChatLlama3:
		return "llama3"
	}
	return fmt.Sprintf("ChatFormat(%d)", int(f))
}

// DetectChatFormat picks the layout of a Jinja chat template. The rule: a template containing
// "<|start_header_id|>" is ChatLlama3; every other template — the 2B4T one (which contains
// "'Assistant: '" and "<|eot_id|>"), an empty one (the file has none) and any unrecognised
// family — is ChatBitNet, since the BitNet b1.58 models bitgpu runs were tuned on that layout.
func DetectChatFormat(template string) ChatFormat {
	if strings.Contains(template, "<|start_header_id|>") {
		return ChatLlama3
	}
	return ChatBitNet
}

// RenderChat renders msgs as a prompt in the layout DetectChatFormat picks for template, ending
// with the assistant's generation prompt when addGenerationPrompt is true. The text holds no BOS:
// the caller prepends the BOS id when Tokenizer.AddBOS is true (EncodeChat does both), so BOS is
// never doubled. Special-token text ("<|eot_id|>") is meant to be encoded with parseSpecial. A
// message with an empty role is an error naming its index.
func RenderChat(template string, msgs []ChatMessage, addGenerationPrompt bool) (string, error) {
	return DetectChatFormat(template).Render(msgs, addGenerationPrompt)
}

// Render renders msgs in format f (see RenderChat).
func (f ChatFormat) Render(msgs []ChatMessage, addGenerationPrompt bool) (string, error) {
	text, _, err := f.RenderSpans(msgs, addGenerationPrompt)
	return text, err
}

// RenderSpans renders msgs in format f like Render and also returns the byte span of every
// message's content in the text, in message order (the spans Tokenizer.EncodeTemplate keeps as
// plain text).
func (f ChatFormat) RenderSpans(msgs []ChatMessage, addGenerationPrompt bool) (string, []Span, error) {
	var b strings.Builder
	var spans []Span
	for i, m := range msgs {
		if strings.TrimSpace(m.Role) == "" {
			return "", nil, fmt.Errorf("chat: message %d has an empty role", i)
		}
		content := strings.TrimSpace(m.Content)
		switch f {
		case ChatBitNet:
			b.WriteString(capitalize(m.Role))
			b.WriteString(": ")
			spans = append(spans, Span{b.Len(), b.Len() + len(content)})
			b.WriteString(content)
			b.WriteString("<|eot_id|>")
		case ChatLlama3:
			b.WriteString("<|start_header_id|>")
			b.WriteString(m.Role)
			b.WriteString("<|end_header_id|>\n\n")
			spans = append(spans, Span{b.Len(), b.Len() + len(content)})
			b.WriteString(content)
			b.WriteString("<|eot_id|>")
		default:
			return "", nil, fmt.Errorf("chat: unknown format %v", f)
		}
	}
	if addGenerationPrompt {
		switch f {
		case ChatBitNet:
			b.WriteString("Assistant: ")
		case ChatLlama3:
			b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
		default:
			return "", nil, fmt.Errorf("chat: unknown format %v", f)
		}
	}
	return b.String(), spans, nil
}

// capitalize is Jinja's `capitalize` filter: first character upper-case, the rest lower-case.
func capitalize(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	return string(unicode.ToUpper(r)) + strings.ToLower(s[n:])
}

// EncodeChat renders msgs with RenderChat and encodes the result, prefixed with tok's BOS id when
// tok.AddBOS() is true. The template's own markers ("<|eot_id|>", "<|start_header_id|>") become
// their special tokens; special-token text typed inside a message's content stays plain text
// (Tokenizer.EncodeTemplate), so a user cannot forge a turn — llama.cpp's rule for chat input.
// EncodeChatSpecial parses it instead. Errors: a nil tokenizer, or RenderChat's.
func EncodeChat(tok Tokenizer, template string, msgs []ChatMessage, addGenerationPrompt bool) ([]int, error) {
	return encodeChat(tok, template, msgs, addGenerationPrompt, false)
}

// EncodeChatSpecial is EncodeChat with special-token text inside message content parsed as the
// special token too, as when the whole rendered template is tokenized by HF's
// apply_chat_template (bitgpu chat --special).
func EncodeChatSpecial(tok Tokenizer, template string, msgs []ChatMessage, addGenerationPrompt bool) ([]int, error) {
	return encodeChat(tok, template, msgs, addGenerationPrompt, true)
}

// encodeChat is EncodeChat (special false) and EncodeChatSpecial (special true).
func encodeChat(tok Tokenizer, template string, msgs []ChatMessage, addGenerationPrompt, special bool) ([]int, error) {
	if tok == nil {
		return nil, fmt.Errorf("chat: nil tokenizer")
	}
	text, spans, err := DetectChatFormat(template).RenderSpans(msgs, addGenerationPrompt)
	if err != nil {
		return nil, err
	}
	var ids []int
	if tok.AddBOS() && tok.BOS() >= 0 {
		ids = append(ids, tok.BOS())
	}
	if special {
		spans = nil
	}
	return append(ids, tok.EncodeTemplate(text, spans)...), nil
}
