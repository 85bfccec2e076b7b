package model

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
)

// TokenType is a token's kind as GGUF `tokenizer.ggml.token_type` stores it; the values are
// llama.cpp's `enum llama_token_type` (llama-vocab), which SentencePiece's piece types also follow.
type TokenType int32

// Token types. Control and user-defined tokens are "special": they are matched as whole strings
// in the input text before BPE or SentencePiece run, and they decode to their text verbatim.
const (
	TokenUndefined   TokenType = 0
	TokenNormal      TokenType = 1
	TokenUnknown     TokenType = 2 // <unk>
	TokenControl     TokenType = 3 // <s>, <|eot_id|>: matched only when Encode's parseSpecial is true
	TokenUserDefined TokenType = 4 // always matched whole, even when parseSpecial is false
	TokenUnused      TokenType = 5 // decodes to nothing
	TokenByte        TokenType = 6 // SentencePiece byte fallback <0xNN>
)

// GGUF tokenizer metadata keys (llama.cpp gguf-py `Keys.Tokenizer`).
const (
	KeyTokenizerModel     = "tokenizer.ggml.model"
	KeyTokenizerPre       = "tokenizer.ggml.pre"
	KeyTokenizerTokens    = "tokenizer.ggml.tokens"
	KeyTokenizerScores    = "tokenizer.ggml.scores"
	KeyTokenizerTokenType = "tokenizer.ggml.token_type"
	KeyTokenizerMerges    = "tokenizer.ggml.merges"
	KeyTokenizerBOS       = "tokenizer.ggml.bos_token_id"
	KeyTokenizerEOS       = "tokenizer.ggml.eos_token_id"
	KeyTokenizerEOT       = "tokenizer.ggml.eot_token_id"
	KeyTokenizerUNK       = "tokenizer.ggml.unknown_token_id"
	KeyTokenizerAddBOS    = "tokenizer.ggml.add_bos_token"
	KeyTokenizerAddSpace  = "tokenizer.ggml.add_space_prefix"
	KeyChatTemplate       = "tokenizer.chat_template"
)

// Both tokenizers implement Tokenizer.
var (
	_ Tokenizer = (*BPETokenizer)(nil)
	_ Tokenizer = (*SPMTokenizer)(nil)
)

// eotText is the LLaMA-3 end-of-turn token; when a file names no EOT id, a token with this exact
// text is taken as EOT (as llama.cpp's llama-vocab does when it scans the vocabulary).
const eotText = "<|eot_id|>"

// vocab is the part every tokenizer shares: token strings and types, the special ids, the bytes
// each id decodes to, and the list of special tokens matched whole before BPE/SentencePiece.
type vocab struct {
	tokens []string
	types  []TokenType
	ids    map[string]int
	pieces [][]byte // bytes each id decodes to (set by the concrete tokenizer)

	bos, eos, eot, unk int
	addBOS             bool

	// specials holds the ids of control and user-defined tokens with non-empty text, longest
	// text first (ties by id), the order llama.cpp's tokenizer_st_partition tries them in.
	specials []int
}

// newVocab indexes tokens and types (types may be nil: all normal). A token text that appears
// twice keeps its first id, as llama.cpp's token_to_id map does.
func newVocab(tokens []string, types []TokenType) (*vocab, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("tokenizer: %s is empty", KeyTokenizerTokens)
	}
	if len(tokens) > math.MaxInt32 {
		return nil, fmt.Errorf("tokenizer: %s has %d tokens, more than fit an int32 id", KeyTokenizerTokens, len(tokens))
	}
	if types == nil {
		types = make([]TokenType, len(tokens))
		for i := range types {
			types[i] = TokenNormal
		}
	}
	if len(types) != len(tokens) {
		return nil, fmt.Errorf("tokenizer: %s has %d entries, %s has %d", KeyTokenizerTokenType, len(types), KeyTokenizerTokens, len(tokens))
	}
	v := &vocab{tokens: tokens, types: types, ids: make(map[string]int, len(tokens)),
		bos: -1, eos: -1, eot: -1, unk: -1}
	for i, t := range tokens {
		if _, dup := v.ids[t]; !dup {
			v.ids[t] = i
		}
		if (types[i] == TokenControl || types[i] == TokenUserDefined) && t != "" {
			v.specials = append(v.specials, i)
		}
		if types[i] == TokenUnknown && v.unk < 0 {
			v.unk = i
		}
	}
	sort.SliceStable(v.specials, func(a, b int) bool {
		return len(tokens[v.specials[a]]) > len(tokens[v.specials[b]])
	})
	return v, nil
}

// TokenBytes returns the bytes id decodes to: for byte-level BPE the token mapped back through the
// GPT-2 byte table, for SentencePiece the piece with `▁` as a space or the byte of `<0xNN>`;
// control and user-defined tokens give their text. Out-of-range ids give nil. The slice is shared:
// do not modify it.
func (v *vocab) TokenBytes(id int) []byte {
	if id < 0 || id >= len(v.pieces) {
		return nil
	}
	return v.pieces[id]
}

// VocabSize is the number of token ids (the length of `tokenizer.ggml.tokens`).
func (v *vocab) VocabSize() int { return len(v.tokens) }

// BOS is the beginning-of-sequence id, -1 when the tokenizer has none.
func (v *vocab) BOS() int { return v.bos }

// EOS is the end-of-sequence id, -1 when the tokenizer has none.
func (v *vocab) EOS() int { return v.eos }

// EOT is the end-of-turn id (`<|eot_id|>` for LLaMA-3 vocabularies), -1 when absent.
func (v *vocab) EOT() int { return v.eot }

// AddBOS reports whether prompts should start with BOS (`tokenizer.ggml.add_bos_token`); false
// when the tokenizer has no BOS id.
func (v *vocab) AddBOS() bool { return v.addBOS && v.bos >= 0 }

// IsControl reports whether id is a control token (token type 3: BOS, EOS, `<|eot_id|>`, reserved
// tokens), which generated text does not show. Out-of-range ids are not control tokens.
func (v *vocab) IsControl(id int) bool {
	return id >= 0 && id < len(v.types) && v.types[id] == TokenControl
}

// TokenText returns the token's string as the vocabulary stores it (GPT-2 byte-mapped for
// byte-level BPE, with `▁` for SentencePiece), or "" for an out-of-range id.
func (v *vocab) TokenText(id int) string {
	if id < 0 || id >= len(v.tokens) {
		return ""
	}
	return v.tokens[id]
}

// TokenID returns the id of the token whose vocabulary string is exactly text.
func (v *vocab) TokenID(text string) (int, bool) {
	id, ok := v.ids[text]
	return id, ok
}

// TokenType returns id's type; out-of-range ids are TokenUndefined.
func (v *vocab) TokenType(id int) TokenType {
	if id < 0 || id >= len(v.types) {
		return TokenUndefined
	}
	return v.types[id]
}

// decode concatenates the pieces of ids, skipping out-of-range ids.
func (v *vocab) decode(ids []int) string {
	n := 0
	for _, id := range ids {
		n += len(v.TokenBytes(id))
	}
	var b strings.Builder
	b.Grow(n)
	for _, id := range ids {
		b.Write(v.TokenBytes(id))
	}
	return b.String()
}

// fragment is a piece of the input text: raw text to tokenize (id < 0) or a special token; off
// is its byte offset in the text.
type fragment struct {
	text string
	id   int
	off  int
}

// Span is a byte range [Start, End) of a text.
type Span struct{ Start, End int }

// inSpans reports whether [start, end) overlaps one of spans.
func inSpans(spans []Span, start, end int) bool {
	for _, s := range spans {
		if start < s.End && s.Start < end {
			return true
		}
	}
	return false
}

// splitSpecial cuts text at every occurrence of a special token, as llama.cpp's
// tokenizer_st_partition does: special tokens are tried longest first, each one splitting every
// raw fragment left to right at its non-overlapping occurrences. User-defined tokens always
// split; control tokens only when parseSpecial is true and the occurrence overlaps none of the
// literal spans (text that must stay text, such as a chat message's content).
func (v *vocab) splitSpecial(text string, parseSpecial bool, literal []Span) []fragment {
	if text == "" {
		return nil
	}
	frags := []fragment{{text: text, id: -1}}
	for _, id := range v.specials {
		control := v.types[id] == TokenControl
		if control && !parseSpecial {
			continue
		}
		tok := v.tokens[id]
		var out []fragment
		changed := false
		for _, f := range frags {
			if f.id >= 0 || !strings.Contains(f.text, tok) {
				out = append(out, f)
				continue
			}
			from, i := 0, 0 // text[from:] not yet emitted; search from i
			for {
				j := strings.Index(f.text[i:], tok)
				if j < 0 {
					break
				}
				j += i
				if control && inSpans(literal, f.off+j, f.off+j+len(tok)) {
					i = j + 1
					continue
				}
				changed = true
				if j > from {
					out = append(out, fragment{text: f.text[from:j], id: -1, off: f.off + from})
				}
				out = append(out, fragment{text: tok, id: id, off: f.off + j})
				from = j + len(tok)
				i = from
			}
			if from < len(f.text) {
				out = append(out, fragment{text: f.text[from:], id: -1, off: f.off + from})
			}
		}
		if changed {
			frags = out
		}
	}
	return frags
}

// setSpecialIDs reads the BOS/EOS/EOT/UNK ids from GGUF metadata, checking they are in range.
// When no EOT id is given, a token spelled `<|eot_id|>` is used.
func (v *vocab) setSpecialIDs(meta map[string]any) error {
	for _, k := range []struct {
		key string
		dst *int
	}{{KeyTokenizerBOS, &v.bos}, {KeyTokenizerEOS, &v.eos}, {KeyTokenizerEOT, &v.eot}, {KeyTokenizerUNK, &v.unk}} {
		id, ok, err := metaInt(meta, k.key)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if id < 0 || id >= int64(len(v.tokens)) {
			return fmt.Errorf("tokenizer: %s = %d is outside the vocabulary of %d tokens", k.key, id, len(v.tokens))
		}
		*k.dst = int(id)
	}
	if v.eot < 0 {
		if id, ok := v.ids[eotText]; ok {
			v.eot = id
		}
	}
	return nil
}

// NewTokenizerFromGGUF builds the tokenizer a GGUF file describes. meta is the file's metadata with
// scalars as Go scalars (any integer width is accepted for ids and flags) and arrays as typed
// slices. It reads:
//
//   - `tokenizer.ggml.model` (string): "gpt2" → byte-level BPE (*BPETokenizer), "llama" →
//     SentencePiece (*SPMTokenizer); any other value is an error naming it.
//   - `tokenizer.ggml.tokens` ([]string, required), `tokenizer.ggml.token_type` ([]int32,
//     optional: all normal), `tokenizer.ggml.scores` ([]float32, required for "llama"),
//     `tokenizer.ggml.merges` ([]string "a b", required for "gpt2").
//   - `tokenizer.ggml.pre` (string, "gpt2" only): the pre-tokenizer, see PreTokenizerPattern.
//   - `tokenizer.ggml.bos_token_id`, `eos_token_id`, `eot_token_id`, `unknown_token_id`
//     (optional integers; -1 when absent; EOT falls back to a token spelled `<|eot_id|>`).
//   - `tokenizer.ggml.add_bos_token` (bool; default true for "llama" and for the LLaMA-3
//     pre-tokenizer, false otherwise — llama.cpp's defaults) and, for "llama",
//     `tokenizer.ggml.add_space_prefix` (bool, default true).
//
// A missing or ill-typed key, or an id outside the vocabulary, is an error naming the key.
func NewTokenizerFromGGUF(meta map[string]any) (Tokenizer, error) {
	model, ok, err := metaString(meta, KeyTokenizerModel)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("tokenizer: metadata key %s is missing", KeyTokenizerModel)
	}
	switch model {
	case "gpt2":
		return newBPEFromGGUF(meta)
	case "llama":
		return newSPMFromGGUF(meta)
	default:
		return nil, fmt.Errorf("tokenizer: %s = %q is not supported (want \"gpt2\" or \"llama\")", KeyTokenizerModel, model)
	}
}

// ggufVocab reads the token list and types shared by both tokenizer models.
func ggufVocab(meta map[string]any) (*vocab, error) {
	tokens, ok, err := metaStrings(meta, KeyTokenizerTokens)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("tokenizer: metadata key %s is missing", KeyTokenizerTokens)
	}
	raw, ok, err := metaInts(meta, KeyTokenizerTokenType)
	if err != nil {
		return nil, err
	}
	var types []TokenType
	if ok {
		if len(raw) != len(tokens) {
			return nil, fmt.Errorf("tokenizer: %s has %d entries, %s has %d", KeyTokenizerTokenType, len(raw), KeyTokenizerTokens, len(tokens))
		}
		types = make([]TokenType, len(raw))
		for i, t := range raw {
			if t < int64(TokenUndefined) || t > int64(TokenByte) {
				return nil, fmt.Errorf("tokenizer: %s[%d] = %d for token %q is not a token type (0..6)", KeyTokenizerTokenType, i, t, tokens[i])
			}
			types[i] = TokenType(t)
		}
	}
	v, err := newVocab(tokens, types)
	if err != nil {
		return nil, err
	}
	if err := v.setSpecialIDs(meta); err != nil {
		return nil, err
	}
	return v, nil
}

// metaString reads a string key; ok is false when the key is absent.
func metaString(meta map[string]any, key string) (s string, ok bool, err error) {
	x, ok := meta[key]
	if !ok {
		return "", false, nil
	}
	s, isStr := x.(string)
	if !isStr {
		return "", false, fmt.Errorf("tokenizer: metadata key %s is %T, want string", key, x)
	}
	return s, true, nil
}

// metaBool reads a bool key; ok is false when the key is absent.
func metaBool(meta map[string]any, key string) (b bool, ok bool, err error) {
	x, ok := meta[key]
	if !ok {
		return false, false, nil
	}
	b, isBool := x.(bool)
	if !isBool {
		return false, false, fmt.Errorf("tokenizer: metadata key %s is %T, want bool", key, x)
	}
	return b, true, nil
}

// metaInt reads an integer key of any Go integer type; ok is false when the key is absent.
func metaInt(meta map[string]any, key string) (n int64, ok bool, err error) {
	x, ok := meta[key]
	if !ok {
		return 0, false, nil
	}
	n, isInt := toInt64(x)
	if !isInt {
		return 0, false, fmt.Errorf("tokenizer: metadata key %s is %T, want an integer", key, x)
	}
	return n, true, nil
}

// toInt64 converts any Go integer (not above MaxInt64) to int64.
func toInt64(x any) (int64, bool) {
	rv := reflect.ValueOf(x)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		u := rv.Uint()
		if u > math.MaxInt64 {
			return 0, false
		}
		return int64(u), true
	}
	return 0, false
}

// metaStrings reads a []string key (or []any of strings); ok is false when the key is absent.
func metaStrings(meta map[string]any, key string) (s []string, ok bool, err error) {
	x, ok := meta[key]
	if !ok {
		return nil, false, nil
	}
	switch v := x.(type) {
	case []string:
		return v, true, nil
	case []any:
		out := make([]string, len(v))
		for i, e := range v {
			str, isStr := e.(string)
			if !isStr {
				return nil, false, fmt.Errorf("tokenizer: metadata key %s element %d is %T, want string", key, i, e)
			}
			out[i] = str
		}
		return out, true, nil
	}
	return nil, false, fmt.Errorf("tokenizer: metadata key %s is %T, want an array of strings", key, x)
}

// metaInts reads an array of any integer type (or []any of integers).
func metaInts(meta map[string]any, key string) (n []int64, ok bool, err error) {
	x, ok := meta[key]
	if !ok {
		return nil, false, nil
	}
	rv := reflect.ValueOf(x)
	if rv.Kind() != reflect.Slice {
		return nil, false, fmt.Errorf("tokenizer: metadata key %s is %T, want an array of integers", key, x)
	}
	out := make([]int64, rv.Len())
	for i := range out {
		v, isInt := toInt64(rv.Index(i).Interface())
		if !isInt {
			return nil, false, fmt.Errorf("tokenizer: metadata key %s element %d is %T, want an integer", key, i, rv.Index(i).Interface())
		}
		out[i] = v
	}
	return out, true, nil
}

// metaFloats reads a []float32 key ([]float64 and []any of floats are accepted too).
func metaFloats(meta map[string]any, key string) (f []float32, ok bool, err error) {
	x, ok := meta[key]
	if !ok {
		return nil, false, nil
	}
	switch v := x.(type) {
	case []float32:
		return v, true, nil
	case []float64:
		out := make([]float32, len(v))
		for i, e := range v {
			out[i] = float32(e)
		}
		return out, true, nil
	case []any:
		out := make([]float32, len(v))
		for i, e := range v {
			switch n := e.(type) {
			case float32:
				out[i] = n
			case float64:
				out[i] = float32(n)
			default:
				return nil, false, fmt.Errorf("tokenizer: metadata key %s element %d is %T, want float32", key, i, e)
			}
		}
		return out, true, nil
	}
	return nil, false, fmt.Errorf("tokenizer: metadata key %s is %T, want an array of float32", key, x)
}
