package model

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Test vocabularies. testBPEMeta is a byte-level BPE vocabulary written out by hand: ids 0..255
// are the 256 GPT-2 byte tokens in byte order (id 104 is "h", id 32 is "Ġ", the space), then
// these merged tokens and merges (rank = position in the merge list):
//
//	256 "ll"      rank 0: l l
//	257 "he"      rank 1: h e
//	258 "hell"    rank 2: he ll
//	259 "Ġw"      rank 3: Ġ w
//	260 "or"      rank 4: o r
//	261 "hello"   rank 5: hell o
//	262 "Ġwor"    rank 6: Ġw or
//	263 "Ġworld"  (in the vocabulary, but no merge builds it)
//	264 "<|eot_id|>"         control
//	265 "<|begin_of_text|>"  control
//	266 "<tool>"             user-defined
const (
	tLL, tHE, tHELL, tGW, tOR, tHELLO, tGWOR, tGWORLD = 256, 257, 258, 259, 260, 261, 262, 263
	tEOT, tBOT, tTool                                 = 264, 265, 266
)

var testMerges = []string{"l l", "h e", "he ll", "Ġ w", "o r", "hell o", "Ġw or"}

func testBPEMeta(pre string) map[string]any {
	tokens := make([]string, 0, 267)
	types := make([]int32, 0, 267)
	for b := 0; b < 256; b++ {
		tokens = append(tokens, string(byteToRune[b]))
		types = append(types, int32(TokenNormal))
	}
	for _, t := range []string{"ll", "he", "hell", "Ġw", "or", "hello", "Ġwor", "Ġworld"} {
		tokens = append(tokens, t)
		types = append(types, int32(TokenNormal))
	}
	tokens = append(tokens, "<|eot_id|>", "<|begin_of_text|>", "<tool>")
	types = append(types, int32(TokenControl), int32(TokenControl), int32(TokenUserDefined))
	return map[string]any{
		"tokenizer.ggml.model":        "gpt2",
		"tokenizer.ggml.pre":          pre,
		"tokenizer.ggml.tokens":       tokens,
		"tokenizer.ggml.token_type":   types,
		"tokenizer.ggml.merges":       append([]string(nil), testMerges...),
		"tokenizer.ggml.bos_token_id": uint32(tBOT),
		"tokenizer.ggml.eos_token_id": uint32(tEOT),
	}
}

func newTestBPE(t testing.TB, pre string) *BPETokenizer {
	t.Helper()
	tok, err := NewTokenizerFromGGUF(testBPEMeta(pre))
	require.NoError(t, err)
	return tok.(*BPETokenizer)
}

// trickyStrings is the round-trip corpus.
var trickyStrings = []string{
	"", "a", "hello world", "Hello, World!", "  leading spaces", "trailing spaces  ", "    ",
	"a\n\nb", "\n\n", "\n", "\t\ttabs\tand\ttext\t", "mixed\r\nCRLF\r\n", "12345", "1234567 89",
	"3.14159 and 1,000,000", "it's we'll THEY'RE I'M you'd 'S 'll", "naïve café résumé",
	"日本語のテキスト", "中文，标点。", "emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇺🇸", "Ünïcödé ÄÖÜ ß",
	"مرحبا بالعالم", "\u00a0nbsp\u2009thin\u3000ideographic", "<|eot_id|> in text", "a<tool>b",
	"\x00\x01\x7f control bytes", "€100 £5 ¥", "x=1+22*333/4444", "   \n  \n\n   x",
	strings.Repeat(" ", 3000) + "x", strings.Repeat("ab", 3000), strings.Repeat("1", 1000),
}

func TestTokenizerGGUFDefaults(t *testing.T) {
	tok := newTestBPE(t, "llama-bpe")
	require.Equal(t, 267, tok.VocabSize())
	require.Equal(t, tBOT, tok.BOS())
	require.Equal(t, tEOT, tok.EOS())
	require.Equal(t, tEOT, tok.EOT(), "EOT falls back to the token spelled <|eot_id|>")
	require.True(t, tok.AddBOS(), "llama-bpe defaults add_bos to true")
	require.False(t, newTestBPE(t, "gpt2").AddBOS(), "other BPE defaults add_bos to false")
	require.True(t, tok.IsControl(tEOT))
	require.False(t, tok.IsControl(tTool))
	require.False(t, tok.IsControl(tHELLO))
	require.False(t, tok.IsControl(-1))
	require.False(t, tok.IsControl(1<<20))
	require.Nil(t, tok.TokenBytes(-1))
	require.Nil(t, tok.TokenBytes(267))
	require.Equal(t, "Ġworld", tok.TokenText(tGWORLD))
	require.Equal(t, " world", string(tok.TokenBytes(tGWORLD)))
	id, ok := tok.TokenID("hello")
	require.True(t, ok)
	require.Equal(t, tHELLO, id)

	meta := testBPEMeta("llama-bpe")
	meta["tokenizer.ggml.add_bos_token"] = false
	meta["tokenizer.ggml.eot_token_id"] = int64(tBOT) // any integer width is accepted
	tok2, err := NewTokenizerFromGGUF(meta)
	require.NoError(t, err)
	require.False(t, tok2.AddBOS())
	require.Equal(t, tBOT, tok2.EOT())
}

func TestTokenizerGGUFErrors(t *testing.T) {
	cases := []struct {
		name   string
		edit   func(m map[string]any)
		substr string
	}{
		{"no model", func(m map[string]any) { delete(m, "tokenizer.ggml.model") }, "tokenizer.ggml.model"},
		{"model type", func(m map[string]any) { m["tokenizer.ggml.model"] = 3 }, "tokenizer.ggml.model"},
		{"unknown model", func(m map[string]any) { m["tokenizer.ggml.model"] = "bert" }, `"bert"`},
		{"unknown pre", func(m map[string]any) { m["tokenizer.ggml.pre"] = "qwen9" }, `"qwen9"`},
		{"pre type", func(m map[string]any) { m["tokenizer.ggml.pre"] = []string{"x"} }, "tokenizer.ggml.pre"},
		{"no tokens", func(m map[string]any) { delete(m, "tokenizer.ggml.tokens") }, "tokenizer.ggml.tokens"},
		{"tokens type", func(m map[string]any) { m["tokenizer.ggml.tokens"] = []int32{1} }, "tokenizer.ggml.tokens"},
		{"empty tokens", func(m map[string]any) { m["tokenizer.ggml.tokens"] = []string{} }, "tokenizer.ggml.tokens"},
		{"no merges", func(m map[string]any) { delete(m, "tokenizer.ggml.merges") }, "tokenizer.ggml.merges"},
		{"bad merge", func(m map[string]any) { m["tokenizer.ggml.merges"] = []string{"l l", "hello"} }, "tokenizer.ggml.merges[1]"},
		{"types length", func(m map[string]any) { m["tokenizer.ggml.token_type"] = []int32{1} }, "tokenizer.ggml.token_type"},
		{"types value", func(m map[string]any) {
			m["tokenizer.ggml.token_type"].([]int32)[7] = 9
		}, "tokenizer.ggml.token_type[7]"},
		{"bos range", func(m map[string]any) { m["tokenizer.ggml.bos_token_id"] = uint32(5000) }, "tokenizer.ggml.bos_token_id"},
		{"eos type", func(m map[string]any) { m["tokenizer.ggml.eos_token_id"] = "2" }, "tokenizer.ggml.eos_token_id"},
		{"eot negative", func(m map[string]any) { m["tokenizer.ggml.eot_token_id"] = int32(-3) }, "tokenizer.ggml.eot_token_id"},
		{"add_bos type", func(m map[string]any) { m["tokenizer.ggml.add_bos_token"] = uint8(1) }, "tokenizer.ggml.add_bos_token"},
		{"spm no scores", func(m map[string]any) { m["tokenizer.ggml.model"] = "llama" }, "tokenizer.ggml.scores"},
		{"spm scores length", func(m map[string]any) {
			m["tokenizer.ggml.model"] = "llama"
			m["tokenizer.ggml.scores"] = []float32{0, 1}
		}, "tokenizer.ggml.scores"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := testBPEMeta("llama-bpe")
			c.edit(m)
			_, err := NewTokenizerFromGGUF(m)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.substr)
		})
	}
}

func TestTokenizerSpecialSplit(t *testing.T) {
	// Control tokens "ab" and "bcd": llama.cpp tries the longer one first, so "abcd" is "a" + "bcd".
	tokens := []string{"a", "b", "c", "d", "ab", "bcd"}
	types := []TokenType{1, 1, 1, 1, TokenControl, TokenControl}
	v, err := newVocab(tokens, types)
	require.NoError(t, err)
	require.Equal(t, []fragment{{"a", -1, 0}, {"bcd", 5, 1}}, v.splitSpecial("abcd", true, nil))
	require.Equal(t, []fragment{{"abcd", -1, 0}}, v.splitSpecial("abcd", false, nil))
	require.Equal(t, []fragment{{"ab", 4, 0}, {"x", -1, 2}, {"ab", 4, 3}, {"ab", 4, 5}}, v.splitSpecial("abxabab", true, nil))
	// Literal spans keep control-token text as text: only the occurrence at 5 is outside [2, 5).
	require.Equal(t, []fragment{{"ab", 4, 0}, {"xab", -1, 2}, {"ab", 4, 5}}, v.splitSpecial("abxabab", true, []Span{{2, 5}}))
	// An occurrence that only partly overlaps a span stays text too.
	require.Equal(t, []fragment{{"abxa", -1, 0}, {"bcd", 5, 4}}, v.splitSpecial("abxabcd", true, []Span{{0, 1}, {3, 4}}))
	require.Nil(t, v.splitSpecial("", true, nil))
}

func TestTokenizerConcurrent(t *testing.T) {
	toks := []Tokenizer{newTestBPE(t, "llama-bpe"), newTestSPM(t, true)}
	for _, tok := range toks {
		want := make([][]int, len(trickyStrings))
		for i, s := range trickyStrings {
			want[i] = tok.Encode(s, true)
		}
		errs := make(chan error, 4)
		for g := 0; g < 4; g++ {
			go func() {
				for i, s := range trickyStrings {
					if got := tok.Encode(s, true); !slices.Equal(got, want[i]) {
						errs <- fmt.Errorf("input %q: %v != %v", s, got, want[i])
						return
					}
				}
				errs <- nil
			}()
		}
		for g := 0; g < 4; g++ {
			require.NoError(t, <-errs)
		}
	}
}
