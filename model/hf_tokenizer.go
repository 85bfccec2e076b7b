package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"

	"github.com/bitgpu/bitgpu/internal/fsutil"
)

// HF tokenizer file names in a Hugging Face model directory.
const (
	HFTokenizerFile       = "tokenizer.json"
	HFTokenizerConfigFile = "tokenizer_config.json"
)

// HFTokenizerConfig is what bitgpu reads from a Hugging Face `tokenizer_config.json`. Token fields
// are the token texts ("<|begin_of_text|>"), "" when absent; they may be written in the file as a
// plain string or as an AddedToken object with a "content" field.
type HFTokenizerConfig struct {
	BOSToken string
	EOSToken string
	// ChatTemplate is the Jinja `chat_template` (the one named "default" when the file lists
	// several).
	ChatTemplate string
	// AddBOSToken is `add_bos_token`, nil when the file does not set it.
	AddBOSToken *bool
}

// ReadHFTokenizerConfig reads dir/tokenizer_config.json. A missing file gives a zero config and no
// error; unreadable JSON or an ill-typed field is an error naming the file and the field.
func ReadHFTokenizerConfig(dir string) (HFTokenizerConfig, error) {
	var cfg HFTokenizerConfig
	path := filepath.Join(dir, HFTokenizerConfigFile)
	data, err := fsutil.ReadRegular(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return cfg, fmt.Errorf("%s: %v", path, err)
	}
	for _, f := range []struct {
		key string
		dst *string
	}{{"bos_token", &cfg.BOSToken}, {"eos_token", &cfg.EOSToken}} {
		s, err := hfTokenString(raw[f.key])
		if err != nil {
			return cfg, fmt.Errorf("%s: field %q: %v", path, f.key, err)
		}
		*f.dst = s
	}
	if ct, ok := raw["chat_template"]; ok && string(ct) != "null" {
		var s string
		if err := json.Unmarshal(ct, &s); err != nil {
			var list []struct {
				Name     string `json:"name"`
				Template string `json:"template"`
			}
			if err2 := json.Unmarshal(ct, &list); err2 != nil {
				return cfg, fmt.Errorf("%s: field \"chat_template\" is neither a string nor a list of {name, template}", path)
			}
			for _, e := range list {
				if e.Name == "default" || s == "" {
					s = e.Template
				}
			}
		}
		cfg.ChatTemplate = s
	}
	if b, ok := raw["add_bos_token"]; ok && string(b) != "null" {
		var v bool
		if err := json.Unmarshal(b, &v); err != nil {
			return cfg, fmt.Errorf("%s: field \"add_bos_token\" is not a bool: %s", path, b)
		}
		cfg.AddBOSToken = &v
	}
	return cfg, nil
}

// hfTokenString reads a token written as "text", as {"content": "text", ...}, or as null.
func hfTokenString(m json.RawMessage) (string, error) {
	if len(m) == 0 || string(m) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(m, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(m, &obj); err != nil || obj.Content == nil {
		return "", fmt.Errorf("want a string or an object with \"content\", got %s", m)
	}
	return *obj.Content, nil
}

// hfTokenizerJSON is the subset of HF tokenizers' tokenizer.json bitgpu reads.
type hfTokenizerJSON struct {
	AddedTokens []struct {
		ID      *int    `json:"id"`
		Content *string `json:"content"`
		Special bool    `json:"special"`
	} `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Model         struct {
		Type         string          `json:"type"`
		Vocab        map[string]int  `json:"vocab"`
		Merges       json.RawMessage `json:"merges"`
		IgnoreMerges bool            `json:"ignore_merges"`
		ByteFallback bool            `json:"byte_fallback"`
		UnkToken     *string         `json:"unk_token"`
	} `json:"model"`
}

// hfPreTokenizer is one node of tokenizer.json's pre_tokenizer tree.
type hfPreTokenizer struct {
	Type          string            `json:"type"`
	Pretokenizers []json.RawMessage `json:"pretokenizers"`
	Pattern       struct {
		Regex  *string `json:"Regex"`
		String *string `json:"String"`
	} `json:"pattern"`
	Behavior       string `json:"behavior"`
	Invert         bool   `json:"invert"`
	AddPrefixSpace bool   `json:"add_prefix_space"`
	UseRegex       *bool  `json:"use_regex"`
}

// NewTokenizerFromHF builds the tokenizer of a Hugging Face model directory from
// dir/tokenizer.json (HF tokenizers' serialization) and dir/tokenizer_config.json. Supported:
// model.type "BPE" with byte-level pre-tokenization — either ByteLevel with use_regex (GPT-2
// pattern), or a Sequence of Split (a Regex pattern, behavior "Isolated", not inverted) and
// ByteLevel with use_regex false (LLaMA-3); merges as "a b" strings or [a, b] pairs;
// `ignore_merges`; added_tokens (special → control token, else user-defined); normalizer null.
// BOS/EOS come from tokenizer_config.json's bos_token/eos_token looked up in the vocabulary, EOT
// is the token `<|eot_id|>` if present. AddBOS is `add_bos_token` when set, else whether the
// post_processor's TemplateProcessing template starts with the BOS token (how LLaMA-3 files add
// it). The result is a *BPETokenizer whose pre-tokenizer name is "llama-bpe" or "gpt2" when the
// pattern is PatternLlama3 or PatternGPT2, else "". Anything else is an error naming the field.
func NewTokenizerFromHF(dir string) (Tokenizer, error) {
	path := filepath.Join(dir, HFTokenizerFile)
	data, err := fsutil.ReadRegular(path)
	if err != nil {
		return nil, err
	}
	var tj hfTokenizerJSON
	if err := json.Unmarshal(data, &tj); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	cfg, err := ReadHFTokenizerConfig(dir)
	if err != nil {
		return nil, err
	}
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%s: "+format, append([]any{path}, a...)...)
	}
	if tj.Model.Type != "BPE" {
		return nil, fail("model.type %q is not supported (want \"BPE\")", tj.Model.Type)
	}
	normalizer, err := parseHFNormalizer(tj.Normalizer)
	if err != nil {
		return nil, fail("%v", err)
	}
	pattern, addPrefix, err := hfPrePattern(tj.PreTokenizer)
	// Anything beyond one byte-level regex goes through the general pipeline (hf_pipeline.go);
	// a chain with no ByteLevel step must look SentencePiece-derived (Metaspace, a normalizer or
	// byte_fallback), else the byte-level error stands.
	var chain *hfChain
	if err != nil || normalizer != nil || tj.Model.ByteFallback {
		c, cerr := parseHFChain(tj.PreTokenizer)
		if cerr != nil {
			return nil, fail("pre_tokenizer: %v", cerr)
		}
		if !c.byteLevel && !c.metaspace && normalizer == nil && !tj.Model.ByteFallback {
			return nil, fail("pre_tokenizer: %v", err)
		}
		c.prepends = c.prepends || hfHasPrepend(tj.Normalizer)
		chain = c
	}

	// Token table: model.vocab plus added_tokens, indexed by id.
	size := 0
	for tok, id := range tj.Model.Vocab {
		if id < 0 || id >= math.MaxInt32 {
			return nil, fail("model.vocab: token %q has id %d", tok, id)
		}
		size = max(size, id+1)
	}
	for i, a := range tj.AddedTokens {
		if a.ID == nil || a.Content == nil {
			return nil, fail("added_tokens[%d]: missing \"id\" or \"content\"", i)
		}
		if *a.ID < 0 || *a.ID >= math.MaxInt32 {
			return nil, fail("added_tokens[%d]: token %q has id %d", i, *a.Content, *a.ID)
		}
		size = max(size, *a.ID+1)
	}
	if size == 0 {
		return nil, fail("model.vocab is empty")
	}
	if size > 4*(len(tj.Model.Vocab)+len(tj.AddedTokens)) {
		return nil, fail("ids reach %d with only %d tokens", size-1, len(tj.Model.Vocab)+len(tj.AddedTokens))
	}
	tokens := make([]string, size)
	types := make([]TokenType, size)
	set := make([]bool, size)
	for tok, id := range tj.Model.Vocab {
		if set[id] {
			return nil, fail("model.vocab: id %d is used by both %q and %q", id, tokens[id], tok)
		}
		tokens[id], types[id], set[id] = tok, TokenNormal, true
	}
	for _, a := range tj.AddedTokens {
		id := *a.ID
		if set[id] && tokens[id] != *a.Content {
			return nil, fail("added_tokens: id %d is %q in model.vocab but %q in added_tokens", id, tokens[id], *a.Content)
		}
		tokens[id], set[id] = *a.Content, true
		types[id] = TokenUserDefined
		if a.Special {
			types[id] = TokenControl
		}
	}
	for id := range tokens {
		if !set[id] {
			types[id] = TokenUnused
		}
	}
	merges, err := hfMerges(tj.Model.Merges)
	if err != nil {
		return nil, fail("model.merges: %v", err)
	}
	v, err := newVocab(tokens, types)
	if err != nil {
		return nil, fail("%v", err)
	}
	for _, f := range []struct {
		name, text string
		dst        *int
	}{{"bos_token", cfg.BOSToken, &v.bos}, {"eos_token", cfg.EOSToken, &v.eos}} {
		if f.text == "" {
			continue
		}
		id, ok := v.ids[f.text]
		if !ok {
			return nil, fmt.Errorf("%s: %s %q is not in the vocabulary of %s", filepath.Join(dir, HFTokenizerConfigFile), f.name, f.text, path)
		}
		*f.dst = id
	}
	if id, ok := v.ids[eotText]; ok {
		v.eot = id
	}
	if cfg.AddBOSToken != nil {
		v.addBOS = *cfg.AddBOSToken
	} else {
		v.addBOS = hfPostProcessorAddsBOS(tj.PostProcessor, cfg.BOSToken)
	}
	pre := ""
	switch pattern {
	case PatternLlama3:
		pre = "llama-bpe"
	case PatternGPT2:
		pre = "gpt2"
	}
	t, err := newBPE(v, merges, pattern, pre, tj.Model.IgnoreMerges)
	if err != nil {
		return nil, fail("%v", err)
	}
	t.addPrefixSpace = addPrefix
	if chain != nil {
		t.pre, t.chain, t.normalize, t.byteFallback = "", chain, normalizer, tj.Model.ByteFallback
		if t.charLevel = !chain.byteLevel; t.charLevel {
			t.setCharLevelPieces()
		}
	}
	if tj.Model.UnkToken != nil {
		if id, ok := v.ids[*tj.Model.UnkToken]; ok {
			v.unk = id
		}
	}
	return t, nil
}

// hfPrePattern returns the split regex of a byte-level pre_tokenizer and its add_prefix_space.
func hfPrePattern(raw json.RawMessage) (pattern string, addPrefixSpace bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, fmt.Errorf("missing (want ByteLevel, or Sequence of Split and ByteLevel)")
	}
	var p hfPreTokenizer
	if err := json.Unmarshal(raw, &p); err != nil {
		return "", false, err
	}
	nodes := []hfPreTokenizer{p}
	if p.Type == "Sequence" {
		nodes = nodes[:0]
		for i, r := range p.Pretokenizers {
			var n hfPreTokenizer
			if err := json.Unmarshal(r, &n); err != nil {
				return "", false, fmt.Errorf("pretokenizers[%d]: %v", i, err)
			}
			nodes = append(nodes, n)
		}
	}
	byteLevel := false
	for i, n := range nodes {
		switch n.Type {
		case "Split":
			if pattern != "" {
				return "", false, fmt.Errorf("pretokenizers[%d]: more than one Split is not supported", i)
			}
			if n.Behavior != "Isolated" || n.Invert {
				return "", false, fmt.Errorf("pretokenizers[%d]: Split behavior %q invert %v is not supported (want Isolated, false)", i, n.Behavior, n.Invert)
			}
			switch {
			case n.Pattern.Regex != nil && *n.Pattern.Regex != "":
				pattern = *n.Pattern.Regex
			case n.Pattern.String != nil && *n.Pattern.String != "":
				pattern = regexp2Escape(*n.Pattern.String)
			default:
				return "", false, fmt.Errorf("pretokenizers[%d]: Split has no pattern", i)
			}
		case "ByteLevel":
			if byteLevel {
				return "", false, fmt.Errorf("pretokenizers[%d]: more than one ByteLevel", i)
			}
			byteLevel = true
			addPrefixSpace = n.AddPrefixSpace
			useRegex := n.UseRegex == nil || *n.UseRegex
			if useRegex {
				if pattern != "" {
					return "", false, fmt.Errorf("pretokenizers[%d]: ByteLevel with use_regex after a Split is not supported", i)
				}
				pattern = PatternGPT2
			}
		default:
			return "", false, fmt.Errorf("pre-tokenizer type %q is not supported (want ByteLevel, Split, Sequence)", n.Type)
		}
	}
	if !byteLevel {
		return "", false, fmt.Errorf("no ByteLevel step: only byte-level BPE is supported")
	}
	if pattern == "" {
		return "", false, fmt.Errorf("ByteLevel with use_regex false and no Split: no pre-tokenizer pattern")
	}
	return pattern, addPrefixSpace, nil
}

// regexp2Escape quotes every regex metacharacter of s.
func regexp2Escape(s string) string {
	out := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$', '#', ' ', '\t', '\n', '\r', '\f', '\v':
			switch c {
			case '\t':
				out = append(out, '\\', 't')
			case '\n':
				out = append(out, '\\', 'n')
			case '\r':
				out = append(out, '\\', 'r')
			case '\f':
				out = append(out, '\\', 'f')
			case '\v':
				out = append(out, '\\', 'v')
			default:
				out = append(out, '\\', c)
			}
		default:
			out = append(out, c)
		}
	}
	return string(out)
}

// hfMerges reads model.merges written as ["a b", ...] (older files) or [["a", "b"], ...].
func hfMerges(raw json.RawMessage) ([][2]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, fmt.Errorf("missing")
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, err
	}
	out := make([][2]string, len(list))
	for i, m := range list {
		var s string
		if err := json.Unmarshal(m, &s); err == nil {
			a, b, err := splitMerge(s)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %v", i, err)
			}
			out[i] = [2]string{a, b}
			continue
		}
		var pair []string
		if err := json.Unmarshal(m, &pair); err != nil || len(pair) != 2 {
			return nil, fmt.Errorf("[%d]: %s is neither \"a b\" nor [\"a\", \"b\"]", i, m)
		}
		out[i] = [2]string{pair[0], pair[1]}
	}
	return out, nil
}

// hfPostProcessorAddsBOS reports whether a TemplateProcessing post-processor (alone or inside a
// Sequence) puts the special token bos first in its single-sequence template.
func hfPostProcessorAddsBOS(raw json.RawMessage, bos string) bool {
	if bos == "" || len(raw) == 0 || string(raw) == "null" {
		return false
	}
	var p struct {
		Type       string            `json:"type"`
		Processors []json.RawMessage `json:"processors"`
		Single     []struct {
			SpecialToken *struct {
				ID string `json:"id"`
			} `json:"SpecialToken"`
		} `json:"single"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return false
	}
	switch p.Type {
	case "Sequence":
		for _, r := range p.Processors {
			if hfPostProcessorAddsBOS(r, bos) {
				return true
			}
		}
	case "TemplateProcessing":
		return len(p.Single) > 0 && p.Single[0].SpecialToken != nil && p.Single[0].SpecialToken.ID == bos
	}
	return false
}
