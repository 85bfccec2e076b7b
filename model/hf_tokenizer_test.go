package model

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// writeHFDir writes tokenizer.json (the test BPE vocabulary in HF form) and tokenizer_config.json
// to a temporary directory; edit may change the JSON objects before they are written.
func writeHFDir(t *testing.T, edit func(tj, cfg map[string]any)) string {
	t.Helper()
	meta := testBPEMeta("llama-bpe")
	tokens := meta["tokenizer.ggml.tokens"].([]string)
	vocab := map[string]int{}
	for id, s := range tokens[:tEOT] {
		vocab[s] = id
	}
	tj := map[string]any{
		"version": "1.0",
		"added_tokens": []any{
			map[string]any{"id": tEOT, "content": "<|eot_id|>", "special": true},
			map[string]any{"id": tBOT, "content": "<|begin_of_text|>", "special": true},
			map[string]any{"id": tTool, "content": "<tool>", "special": false},
		},
		"normalizer": nil,
		"pre_tokenizer": map[string]any{
			"type": "Sequence",
			"pretokenizers": []any{
				map[string]any{"type": "Split", "pattern": map[string]any{"Regex": PatternLlama3},
					"behavior": "Isolated", "invert": false},
				map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
			},
		},
		"post_processor": map[string]any{
			"type": "Sequence",
			"processors": []any{
				map[string]any{"type": "ByteLevel"},
				map[string]any{"type": "TemplateProcessing", "single": []any{
					map[string]any{"SpecialToken": map[string]any{"id": "<|begin_of_text|>", "type_id": 0}},
					map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}},
				}},
			},
		},
		"decoder": map[string]any{"type": "ByteLevel"},
		"model": map[string]any{
			"type": "BPE", "ignore_merges": true, "vocab": vocab,
			"merges": []any{[]string{"l", "l"}, "h e", []string{"he", "ll"}, "Ġ w", "o r", "hell o", "Ġw or"},
		},
	}
	cfg := map[string]any{
		"bos_token":     "<|begin_of_text|>",
		"eos_token":     map[string]any{"__type": "AddedToken", "content": "<|eot_id|>", "special": true},
		"chat_template": bitnet2B4TTemplate,
	}
	if edit != nil {
		edit(tj, cfg)
	}
	dir := t.TempDir()
	for name, v := range map[string]any{HFTokenizerFile: tj, HFTokenizerConfigFile: cfg} {
		if v == nil {
			continue
		}
		data, err := json.Marshal(v)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o644))
	}
	return dir
}

func TestHFTokenizerLlama3(t *testing.T) {
	dir := writeHFDir(t, nil)
	tok, err := NewTokenizerFromHF(dir)
	require.NoError(t, err)
	require.Equal(t, 267, tok.VocabSize())
	require.Equal(t, tBOT, tok.BOS())
	require.Equal(t, tEOT, tok.EOS())
	require.Equal(t, tEOT, tok.EOT())
	require.True(t, tok.AddBOS(), "TemplateProcessing puts BOS first")
	require.True(t, tok.IsControl(tEOT))
	require.False(t, tok.IsControl(tTool))
	require.Equal(t, []int{tHELLO, tGWORLD}, tok.Encode("hello world", false))
	require.Equal(t, []int{'h', 'i', tEOT, tHELLO}, tok.Encode("hi<|eot_id|>hello", true))
	name, ignore := tok.(*BPETokenizer).PreTokenizer()
	require.Equal(t, "llama-bpe", name)
	require.True(t, ignore)

	// The same vocabulary from GGUF metadata tokenizes identically, and the HF tokenizer's
	// metadata rebuilds it.
	gg := newTestBPE(t, "llama-bpe")
	meta, err := tok.(*BPETokenizer).Metadata()
	require.NoError(t, err)
	again, err := NewTokenizerFromGGUF(meta)
	require.NoError(t, err)
	for _, s := range trickyStrings {
		require.Equal(t, gg.Encode(s, true), tok.Encode(s, true), "input %q", s)
		require.Equal(t, gg.Encode(s, true), again.Encode(s, true), "input %q", s)
		require.Equal(t, s, tok.Decode(tok.Encode(s, false)))
	}

	cfg, err := ReadHFTokenizerConfig(dir)
	require.NoError(t, err)
	require.Equal(t, bitnet2B4TTemplate, cfg.ChatTemplate)
	require.Equal(t, "<|eot_id|>", cfg.EOSToken)
	require.Nil(t, cfg.AddBOSToken)
}

func TestHFTokenizerIgnoreMergesOff(t *testing.T) {
	dir := writeHFDir(t, func(tj, cfg map[string]any) {
		tj["model"].(map[string]any)["ignore_merges"] = false
		cfg["add_bos_token"] = false
		cfg["chat_template"] = []any{
			map[string]any{"name": "tool_use", "template": "x"},
			map[string]any{"name": "default", "template": llama3Template},
		}
	})
	tok, err := NewTokenizerFromHF(dir)
	require.NoError(t, err)
	// Same LLaMA-3 regex, merges always applied: " world" → Ġwor l d.
	require.Equal(t, []int{tHELLO, tGWOR, 'l', 'd'}, tok.Encode("hello world", false))
	require.False(t, tok.AddBOS())
	_, err = tok.(*BPETokenizer).Metadata()
	require.ErrorContains(t, err, "ignore_merges")
	cfg, err := ReadHFTokenizerConfig(dir)
	require.NoError(t, err)
	require.Equal(t, llama3Template, cfg.ChatTemplate)
	require.NotNil(t, cfg.AddBOSToken)
	require.False(t, *cfg.AddBOSToken)
}

func TestHFTokenizerGPT2ByteLevel(t *testing.T) {
	dir := writeHFDir(t, func(tj, cfg map[string]any) {
		tj["pre_tokenizer"] = map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}
		tj["post_processor"] = nil
		tj["model"].(map[string]any)["ignore_merges"] = false
		delete(cfg, "bos_token")
	})
	tok, err := NewTokenizerFromHF(dir)
	require.NoError(t, err)
	require.Equal(t, []int{tHELLO, tGWOR, 'l', 'd'}, tok.Encode("hello world", false))
	require.Equal(t, -1, tok.BOS())
	require.False(t, tok.AddBOS())
	name, _ := tok.(*BPETokenizer).PreTokenizer()
	require.Equal(t, "gpt2", name)

	// add_prefix_space puts a space before text that lacks one.
	dir = writeHFDir(t, func(tj, cfg map[string]any) {
		tj["pre_tokenizer"] = map[string]any{"type": "ByteLevel", "add_prefix_space": true}
		tj["model"].(map[string]any)["ignore_merges"] = false
	})
	tok, err = NewTokenizerFromHF(dir)
	require.NoError(t, err)
	require.Equal(t, []int{' ', tHELLO}, tok.Encode("hello", false))
}

func TestHFTokenizerNoConfig(t *testing.T) {
	dir := writeHFDir(t, nil)
	require.NoError(t, os.Remove(filepath.Join(dir, HFTokenizerConfigFile)))
	tok, err := NewTokenizerFromHF(dir)
	require.NoError(t, err)
	require.Equal(t, -1, tok.BOS())
	require.Equal(t, tEOT, tok.EOT())
}

func TestHFTokenizerErrors(t *testing.T) {
	cases := []struct {
		name   string
		edit   func(tj, cfg map[string]any)
		substr string
	}{
		{"model type", func(tj, cfg map[string]any) { tj["model"].(map[string]any)["type"] = "Unigram" }, `model.type "Unigram"`},
		{"normalizer", func(tj, cfg map[string]any) { tj["normalizer"] = map[string]any{"type": "BertNormalizer"} }, `"BertNormalizer"`},
		{"pre type", func(tj, cfg map[string]any) { tj["pre_tokenizer"] = map[string]any{"type": "Whitespace"} }, `"Whitespace"`},
		{"pre missing", func(tj, cfg map[string]any) { delete(tj, "pre_tokenizer") }, "pre_tokenizer"},
		{"split behavior", func(tj, cfg map[string]any) {
			tj["pre_tokenizer"] = map[string]any{"type": "Sequence", "pretokenizers": []any{
				map[string]any{"type": "Split", "pattern": map[string]any{"Regex": "x"}, "behavior": "Removed"},
				map[string]any{"type": "ByteLevel", "use_regex": false}}}
		}, `"Removed"`},
		{"bad regex", func(tj, cfg map[string]any) {
			tj["pre_tokenizer"] = map[string]any{"type": "Sequence", "pretokenizers": []any{
				map[string]any{"type": "Split", "pattern": map[string]any{"Regex": "(unclosed"}, "behavior": "Isolated"},
				map[string]any{"type": "ByteLevel", "use_regex": false}}}
		}, "(unclosed"},
		{"bad merge", func(tj, cfg map[string]any) { tj["model"].(map[string]any)["merges"] = []any{"h e", 7} }, "model.merges: [1]"},
		{"no merges", func(tj, cfg map[string]any) { delete(tj["model"].(map[string]any), "merges") }, "model.merges"},
		{"bos unknown", func(tj, cfg map[string]any) { cfg["bos_token"] = "<s>" }, `bos_token "<s>"`},
		{"eos type", func(tj, cfg map[string]any) { cfg["eos_token"] = 5 }, `"eos_token"`},
		{"add_bos type", func(tj, cfg map[string]any) { cfg["add_bos_token"] = "yes" }, `"add_bos_token"`},
		{"added id clash", func(tj, cfg map[string]any) {
			tj["added_tokens"] = []any{map[string]any{"id": 5, "content": "<x>", "special": true}}
		}, "id 5"},
		{"added no id", func(tj, cfg map[string]any) {
			tj["added_tokens"] = []any{map[string]any{"content": "<x>", "special": true}}
		}, "added_tokens[0]"},
		{"sparse ids", func(tj, cfg map[string]any) {
			tj["added_tokens"] = []any{map[string]any{"id": 1 << 30, "content": "<x>", "special": true}}
		}, "ids reach"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewTokenizerFromHF(writeHFDir(t, c.edit))
			require.Error(t, err)
			require.Contains(t, err.Error(), c.substr)
		})
	}
	_, err := NewTokenizerFromHF(t.TempDir())
	require.Error(t, err, "no tokenizer.json")
}
