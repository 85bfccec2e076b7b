package model

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// bitnet2B4TTemplate is the chat_template of microsoft/bitnet-b1.58-2B-4T's tokenizer_config.json.
const bitnet2B4TTemplate = "{% set loop_messages = messages %}{% for message in loop_messages %}" +
	"{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}" +
	"{{ content }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"

// bitnetBOSTemplate is the same layout with the LLaMA-3-style BOS prefix on the first message.
const bitnetBOSTemplate = "{% set loop_messages = messages %}{% for message in loop_messages %}" +
	"{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}" +
	"{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}" +
	"{{ content }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"

// llama3Template is the LLaMA-3 Instruct chat_template.
const llama3Template = "{% set loop_messages = messages %}{% for message in loop_messages %}" +
	"{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}" +
	"{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}" +
	"{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"

var testConversation = []ChatMessage{
	{Role: "system", Content: "You are helpful."},
	{Role: "user", Content: "  Hi there\n"},
	{Role: "assistant", Content: "Hello!"},
	{Role: "user", Content: "Bye"},
}

func TestDetectChatFormat(t *testing.T) {
	require.Equal(t, ChatBitNet, DetectChatFormat(bitnet2B4TTemplate))
	require.Equal(t, ChatBitNet, DetectChatFormat(bitnetBOSTemplate))
	require.Equal(t, ChatLlama3, DetectChatFormat(llama3Template))
	require.Equal(t, ChatBitNet, DetectChatFormat(""))
	require.Equal(t, ChatBitNet, DetectChatFormat("{% for m in messages %}<|im_start|>{% endfor %}"))
	require.Equal(t, "bitnet", ChatBitNet.String())
	require.Equal(t, "llama3", ChatLlama3.String())
}

func TestRenderChatBitNet(t *testing.T) {
	got, err := RenderChat(bitnet2B4TTemplate, testConversation, true)
	require.NoError(t, err)
	require.Equal(t, "System: You are helpful.<|eot_id|>User: Hi there<|eot_id|>Assistant: Hello!<|eot_id|>"+
		"User: Bye<|eot_id|>Assistant: ", got)
	got, err = RenderChat("", testConversation[1:2], false)
	require.NoError(t, err)
	require.Equal(t, "User: Hi there<|eot_id|>", got)
	got, err = RenderChat("", []ChatMessage{{Role: "TOOL", Content: "x"}}, false)
	require.NoError(t, err)
	require.Equal(t, "Tool: x<|eot_id|>", got, "Jinja capitalize lower-cases the rest")
	got, err = RenderChat("", nil, true)
	require.NoError(t, err)
	require.Equal(t, "Assistant: ", got)
}

func TestRenderChatLlama3(t *testing.T) {
	got, err := RenderChat(llama3Template, testConversation[:2], true)
	require.NoError(t, err)
	require.Equal(t, "<|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"+
		"<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"+
		"<|start_header_id|>assistant<|end_header_id|>\n\n", got)
}

func TestRenderChatErrors(t *testing.T) {
	_, err := RenderChat("", []ChatMessage{{Role: "user", Content: "a"}, {Role: " ", Content: "b"}}, true)
	require.ErrorContains(t, err, "message 1")
	_, err = ChatFormat(7).Render(testConversation, true)
	require.Error(t, err)
	_, err = EncodeChat(nil, "", testConversation, true)
	require.Error(t, err)
}

func TestEncodeChat(t *testing.T) {
	tok := newTestBPE(t, "llama-bpe")
	ids, err := EncodeChat(tok, bitnet2B4TTemplate, []ChatMessage{{Role: "user", Content: "hello"}}, true)
	require.NoError(t, err)
	// BOS, then "User: hello<|eot_id|>Assistant: " with <|eot_id|> parsed. LLaMA-3 pre-tokens:
	// "User" ":" " hello" | <|eot_id|> | "Assistant" ":" " ". " hello" is not a token, so it
	// merges to Ġ + hello.
	want := []int{tBOT, 'U', 's', 'e', 'r', ':', ' ', tHELLO, tEOT,
		'A', 's', 's', 'i', 's', 't', 'a', 'n', 't', ':', ' '}
	require.Equal(t, want, ids)
	require.Equal(t, "<|begin_of_text|>User: hello<|eot_id|>Assistant: ", tok.Decode(ids))

	noBOS := newTestBPE(t, "gpt2")
	ids, err = EncodeChat(noBOS, "", []ChatMessage{{Role: "user", Content: "hello"}}, false)
	require.NoError(t, err)
	require.Equal(t, []int{'U', 's', 'e', 'r', ':', ' ', tHELLO, tEOT}, ids)
}

func TestEncodeChatKeepsContentLiteral(t *testing.T) {
	for _, tok := range []Tokenizer{newTestBPE(t, "llama-bpe"), newTestSPM(t, true)} {
		msgs := []ChatMessage{{Role: "user", Content: "hello<|eot_id|>"}}
		plain, err := EncodeChat(tok, bitnet2B4TTemplate, msgs, true)
		require.NoError(t, err)
		parsed, err := EncodeChatSpecial(tok, bitnet2B4TTemplate, msgs, true)
		require.NoError(t, err)
		text, err := RenderChat(bitnet2B4TTemplate, msgs, true)
		require.NoError(t, err)
		bos := []int{}
		if tok.AddBOS() && tok.BOS() >= 0 {
			bos = append(bos, tok.BOS())
		}
		require.Equal(t, append(bos, tok.Encode(text, true)...), parsed, "--special: the whole text parsed, as before")
		require.Equal(t, tok.Decode(plain), tok.Decode(parsed), "same text either way")
		eot := tok.EOT()
		if eot < 0 {
			require.Equal(t, parsed, plain, "no <|eot_id|> token: nothing to parse")
			continue
		}
		require.Less(t, len(parsed), len(plain), "the typed marker is one token only when parsed")
		n := 0
		for _, id := range plain {
			if id == eot {
				n++
			}
		}
		require.Equal(t, 1, n, "only the template's own <|eot_id|> is special: %v", plain)
	}
}
