package model

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// hfPipelineVectors is testdata/hf_pipeline_vectors.json: expected values copied from
// huggingface/tokenizers' own tests (each case names its source).
type hfPipelineVectors struct {
	PreTokenizers []struct {
		Source       string          `json:"source"`
		PreTokenizer json.RawMessage `json:"pre_tokenizer"`
		Text         string          `json:"text"`
		Pieces       []string        `json:"pieces"`
	} `json:"pre_tokenizers"`
	Normalizers []struct {
		Source     string          `json:"source"`
		Normalizer json.RawMessage `json:"normalizer"`
		Text       string          `json:"text"`
		Normalized string          `json:"normalized"`
	} `json:"normalizers"`
}

func readHFPipelineVectors(t *testing.T) hfPipelineVectors {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "hf_pipeline_vectors.json"))
	require.NoError(t, err)
	var v hfPipelineVectors
	require.NoError(t, json.Unmarshal(data, &v))
	require.NotEmpty(t, v.PreTokenizers)
	require.NotEmpty(t, v.Normalizers)
	return v
}

// writeSPMStyleHFDir writes a SentencePiece-style tokenizer.json (model BPE with byte_fallback,
// no ByteLevel) with the given normalizer and pre_tokenizer, the vocabulary and merges of
// TestHFCharLevelBPEIDs, and "<s>" as a special added token.
func writeSPMStyleHFDir(t *testing.T, normalizer, pre any) string {
	t.Helper()
	vocab := map[string]int{"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "<0xC3>": 4, "<0xA9>": 5,
		"▁": 6, "h": 7, "e": 8, "l": 9, "o": 10, "▁h": 11, "ll": 12, "▁he": 13, "▁hell": 14}
	tj := map[string]any{
		"added_tokens":  []any{map[string]any{"id": 1, "content": "<s>", "special": true}},
		"normalizer":    normalizer,
		"pre_tokenizer": pre,
		"model": map[string]any{"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "vocab": vocab,
			"merges": []any{"▁ h", "l l", "▁h e", "▁he ll"}},
	}
	dir := t.TempDir()
	data, err := json.Marshal(tj)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, HFTokenizerFile), data, 0o644))
	return dir
}

// hfPieces cuts text as encode does (added tokens first, then the pipeline on each span) and
// returns the pieces the model would see, added tokens as their text.
func hfPieces(tok *BPETokenizer, text string) []string {
	var out []string
	for _, f := range tok.splitSpecial(text, true, nil) {
		if f.id >= 0 {
			out = append(out, f.text)
			continue
		}
		out = append(out, tok.words(f.text, f.off == 0)...)
	}
	return out
}

func TestHFPreTokenizerVectors(t *testing.T) {
	for _, c := range readHFPipelineVectors(t).PreTokenizers {
		t.Run(c.Source, func(t *testing.T) {
			var pre any
			require.NoError(t, json.Unmarshal(c.PreTokenizer, &pre))
			tok, err := NewTokenizerFromHF(writeSPMStyleHFDir(t, nil, pre))
			require.NoError(t, err)
			require.Equal(t, c.Pieces, hfPieces(tok.(*BPETokenizer), c.Text))
		})
	}
}

func TestHFNormalizerVectors(t *testing.T) {
	for _, c := range readHFPipelineVectors(t).Normalizers {
		t.Run(c.Source, func(t *testing.T) {
			n, err := parseHFNormalizer(c.Normalizer)
			require.NoError(t, err)
			require.Equal(t, c.Normalized, n(c.Text))
		})
	}
}

// TestHFCharLevelBPEIDs checks the LLaMA-2 style tokenizer.json pipeline (normalizer Sequence of
// Prepend "▁" and Replace " " → "▁", no pre-tokenizer, BPE with byte_fallback) end to end. The
// ids are derived by hand from HF tokenizers' documented algorithm (models/bpe/model.rs
// merge_word: a character with no token becomes its `<0xNN>` byte tokens, else the unk token;
// then merges by rank; normalizers run on each span between added tokens):
//
//	"hello\né" → "▁hello\né" → ▁ h e l l o <0x0A> <0xC3> <0xA9>
//	→ rank 0 "▁ h", rank 1 "l l", rank 2 "▁h e", rank 3 "▁he ll" → ▁hell o <0x0A> <0xC3> <0xA9>
//	"<s>hi" → <s>, "▁hi" → ▁h + 'i' (no token, no <0x69>) → <unk>
//	"hello h" → "▁hello▁h" → both "▁ h" pairs merge at rank 0 → ▁hell o ▁h
func TestHFCharLevelBPEIDs(t *testing.T) {
	norm := map[string]any{"type": "Sequence", "normalizers": []any{
		map[string]any{"type": "Prepend", "prepend": "▁"},
		map[string]any{"type": "Replace", "pattern": map[string]any{"String": " "}, "content": "▁"}}}
	tok, err := NewTokenizerFromHF(writeSPMStyleHFDir(t, norm, nil))
	require.NoError(t, err)
	require.Equal(t, []int{14, 10, 3, 4, 5}, tok.Encode("hello\né", false))
	require.Equal(t, []int{1, 11, 0}, tok.Encode("<s>hi", true))
	require.Equal(t, []int{14, 10, 11}, tok.Encode("hello h", false)) // "▁hello▁h": both "▁ h" pairs merge at rank 0
	require.Equal(t, "hello\né", tok.Decode([]int{14, 10, 3, 4, 5}))
	_, err = tok.(*BPETokenizer).Metadata()
	require.Error(t, err, "a SentencePiece-style HF pipeline has no GGUF gpt2 form")
}

func TestHFPipelineRefusals(t *testing.T) {
	for _, c := range []struct {
		norm, pre any
		substr    string
	}{
		{map[string]any{"type": "BertNormalizer"}, nil, `normalizer "BertNormalizer"`},
		{map[string]any{"type": "Sequence", "normalizers": []any{map[string]any{"type": "Lowercase"}}}, nil, `"Lowercase"`},
		{nil, map[string]any{"type": "Whitespace"}, `"Whitespace"`},
		{nil, map[string]any{"type": "Metaspace", "prepend_scheme": "sometimes"}, `"sometimes"`},
	} {
		_, err := NewTokenizerFromHF(writeSPMStyleHFDir(t, c.norm, c.pre))
		require.ErrorContains(t, err, c.substr)
	}
}

// TestFalconPreTokenizers checks the GGUF names Falcon3 and Falcon-E files carry: llama.cpp
// (src/llama-vocab.cpp) gives "falcon3" the LLaMA-3 pre-tokenizer with ignore_merges and add_bos;
// "falcon_e" is mapped the same way (see PreTokenizerPattern).
func TestFalconPreTokenizers(t *testing.T) {
	ref, err := NewTokenizerFromGGUF(testBPEMeta("llama-bpe"))
	require.NoError(t, err)
	for _, pre := range []string{"falcon3", "falcon_e"} {
		meta := testBPEMeta(pre)
		delete(meta, KeyTokenizerAddBOS)
		tok, err := NewTokenizerFromGGUF(meta)
		require.NoError(t, err, pre)
		name, ignore := tok.(*BPETokenizer).PreTokenizer()
		require.Equal(t, pre, name)
		require.True(t, ignore)
		require.Equal(t, tok.BOS() >= 0, tok.AddBOS(), "add_bos defaults to true")
		for _, s := range []string{"hello world", "HELLO'S 12345 world!!\n\n", " hello  world "} {
			require.Equal(t, ref.Encode(s, false), tok.Encode(s, false), "%s %q", pre, s)
		}
		m, err := tok.(*BPETokenizer).Metadata()
		require.NoError(t, err)
		require.Equal(t, pre, m[KeyTokenizerPre])
	}
	_, err = NewTokenizerFromGGUF(testBPEMeta("falcon"))
	require.ErrorContains(t, err, `"falcon"`)
}
