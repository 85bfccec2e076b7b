package model

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestIgnoreMergesOffReachability: a tokenizer.json with the LLaMA-3 regex but ignore_merges
// false converts to GGUF `llama-bpe` (which implies ignore_merges) only when no token a
// pre-token can equal is out of the merges' reach.
func TestIgnoreMergesOffReachability(t *testing.T) {
	// The test vocabulary has "Ġworld", which no merge chain reaches: " world" is one token
	// with ignore_merges and three without, so the flag matters and conversion is refused.
	dir := writeHFDir(t, func(tj, cfg map[string]any) {
		tj["model"].(map[string]any)["ignore_merges"] = false
	})
	tok, err := NewTokenizerFromHF(dir)
	require.NoError(t, err)
	require.Equal(t, []int{tHELLO, tGWOR, 'l', 'd'}, tok.Encode("hello world", false))
	_, err = tok.(*BPETokenizer).Metadata()
	require.EqualError(t, err, `tokenizer: ignore_merges = false but GGUF tokenizer.ggml.pre "llama-bpe" implies true, and that changes tokenization: token "Ġworld" (id 263) can be a whole pre-token, which the merges do not produce`)

	// With "ld" and the merges "l d", "Ġwor ld", every token a pre-token can equal is what the
	// merges make of it ("<tool>" and the control tokens are several pre-tokens, so they do not
	// count): the flag changes nothing and the GGUF says llama-bpe.
	dir = writeHFDir(t, func(tj, cfg map[string]any) {
		m := tj["model"].(map[string]any)
		m["ignore_merges"] = false
		m["vocab"].(map[string]int)["ld"] = 267
		m["merges"] = append(m["merges"].([]any), "l d", []string{"Ġwor", "ld"})
	})
	tok, err = NewTokenizerFromHF(dir)
	require.NoError(t, err)
	require.Equal(t, []int{tHELLO, tGWORLD}, tok.Encode("hello world", false))
	meta, err := tok.(*BPETokenizer).Metadata()
	require.NoError(t, err)
	require.Equal(t, "llama-bpe", meta[KeyTokenizerPre])
	again, err := NewTokenizerFromGGUF(meta)
	require.NoError(t, err)
	_, ignore := again.(*BPETokenizer).PreTokenizer()
	require.True(t, ignore)
	for _, s := range append(trickyStrings, "hello world ld world", " hell ll") {
		require.Equal(t, tok.Encode(s, true), again.Encode(s, true), "input %q", s)
	}

	// The same check holds the other way: GPT-2's regex (no ignore_merges implied) with
	// ignore_merges true is refused on the vocabulary where it matters.
	dir = writeHFDir(t, func(tj, cfg map[string]any) {
		tj["pre_tokenizer"] = map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}
	})
	tok, err = NewTokenizerFromHF(dir)
	require.NoError(t, err)
	_, err = tok.(*BPETokenizer).Metadata()
	require.ErrorContains(t, err, `ignore_merges = true but GGUF tokenizer.ggml.pre "gpt2" implies false, and that changes tokenization: token "Ġworld"`)
}
