package model

import (
	"container/heap"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// Pre-tokenizer regular expressions, in the .NET/Oniguruma syntax github.com/dlclark/regexp2
// accepts (Go's regexp has no look-ahead, which `\s+(?!\S)` needs).
const (
	// PatternLlama3 is the LLaMA-3 pre-tokenizer (Meta's tiktoken pattern, the "Split" regex of
	// the LLaMA-3 tokenizer.json, llama.cpp pre-tokenizer "llama-bpe"): case-insensitive English
	// contractions, a letter run with at most one leading non-letter, digit groups of 1 to 3,
	// punctuation runs with trailing newlines, newline runs, and whitespace that leaves the last
	// space to the next word.
	PatternLlama3 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// PatternGPT2 is GPT-2's pre-tokenizer (OpenAI gpt-2 encoder.py; HF ByteLevel with
	// use_regex): lower-case contractions, and optional-space-prefixed runs of letters, of digits
	// and of other symbols.
	PatternGPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
)

// PreTokenizerPattern maps a GGUF `tokenizer.ggml.pre` name to its regular expression and to
// whether a pre-token found whole in the vocabulary skips the merges (HF `ignore_merges`, which
// llama.cpp turns on for the LLaMA-3 pre-tokenizer). Known names: "llama-bpe" (also "llama3",
// "llama-v3") → PatternLlama3 with ignoreMerges; "falcon3" and "falcon_e" → the same
// (ggml-org/llama.cpp src/llama-vocab.cpp lists "falcon3" with the LLaMA-3 names: pre type LLAMA3,
// ignore_merges, add_bos; upstream has no "falcon_e", which microsoft/BitNet's converter writes for
// Falcon-E and ik_llama.cpp maps to LLAMA3 the same way); "gpt2", "default" and "" (key absent) →
// PatternGPT2. Any other name is an error naming it.
func PreTokenizerPattern(pre string) (pattern string, ignoreMerges bool, err error) {
	switch pre {
	case "llama-bpe", "llama3", "llama-v3", "falcon3", "falcon_e":
		return PatternLlama3, true, nil
	case "gpt2", "default", "":
		return PatternGPT2, false, nil
	}
	return "", false, fmt.Errorf("tokenizer: %s = %q is not a supported pre-tokenizer (want \"llama-bpe\", \"falcon3\", \"falcon_e\" or \"gpt2\")", KeyTokenizerPre, pre)
}

// byteToRune and runeToByte are GPT-2's reversible byte↔unicode table (OpenAI gpt-2 encoder.py
// bytes_to_unicode): the printable bytes '!'..'~', '¡'..'¬' and '®'..'ÿ' stand for themselves;
// the other 68 bytes, in increasing order, become U+0100, U+0101, ... so that every byte is a
// visible, non-space character. A space (0x20) becomes 'Ġ' (U+0120), a newline 'Ċ' (U+010A).
var (
	byteToRune [256]rune
	runeToByte = map[rune]byte{}
)

func init() {
	next := rune(256)
	for b := 0; b < 256; b++ {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if printable {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = next
			next++
		}
		runeToByte[byteToRune[b]] = byte(b)
	}
}

// ByteLevelEncode maps raw bytes to GPT-2's byte-level alphabet (each byte one character), the
// form byte-level BPE vocabularies store tokens in: "hello world" → "helloĠworld".
func ByteLevelEncode(s string) string {
	var b strings.Builder
	b.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		b.WriteRune(byteToRune[s[i]])
	}
	return b.String()
}

// ByteLevelDecode is the inverse of ByteLevelEncode. Characters outside the byte alphabet are
// kept as their UTF-8 bytes.
func ByteLevelDecode(s string) []byte {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if b, ok := runeToByte[r]; ok {
			out = append(out, b)
		} else {
			out = utf8.AppendRune(out, r)
		}
	}
	return out
}

// mergeRule is what a merge produces: its priority (lower merges first) and the merged token id.
type mergeRule struct {
	rank int32
	id   int32
}

// BPETokenizer is GPT-2 style byte-level BPE (GGUF `tokenizer.ggml.model = gpt2`, HF
// `model.type = BPE` with a ByteLevel pre-tokenizer), the tokenizer of LLaMA-3 and of BitNet
// b1.58 2B4T. Encode: split out special tokens; cut each remaining span with the pre-tokenizer
// regex; map each pre-token's bytes to the GPT-2 alphabet; emit it whole if ignore_merges is on
// and it is a token; else start from one symbol per byte and repeatedly merge the adjacent pair
// with the lowest merge rank (leftmost first on ties) — the algorithm of OpenAI's gpt-2
// encoder.py, HF tokenizers' BPE model and llama.cpp's llm_tokenizer_bpe. Safe for concurrent
// use.
type BPETokenizer struct {
	*vocab
	pre            string // GGUF pre-tokenizer name, "" for a custom pattern
	pattern        string
	re             *regexp2.Regexp
	ignoreMerges   bool
	addPrefixSpace bool     // HF ByteLevel add_prefix_space
	merges         []string // "a b", in rank order, as read
	ranks          map[[2]int32]mergeRule

	// HF tokenizer.json pipelines other than one byte-level regex (hf_pipeline.go): chain nil
	// means the regex above; normalize is the normalizer; byteFallback emits `<0xNN>` for
	// characters with no token; charLevel marks a SentencePiece-style vocabulary (no byte map).
	chain        *hfChain
	normalize    hfNormalizer
	byteFallback bool
	charLevel    bool
}

// newBPE builds a byte-level BPE tokenizer over v. merges are (left, right) token strings in rank
// order; a merge whose left, right or merged token is not in the vocabulary is ignored (it could
// never fire), and a repeated pair keeps its first rank.
func newBPE(v *vocab, merges [][2]string, pattern, pre string, ignoreMerges bool) (*BPETokenizer, error) {
	re, err := regexp2.Compile(pattern, regexp2.None)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: pre-tokenizer pattern %q: %v", pattern, err)
	}
	t := &BPETokenizer{vocab: v, pre: pre, pattern: pattern, re: re, ignoreMerges: ignoreMerges,
		merges: make([]string, len(merges)), ranks: make(map[[2]int32]mergeRule, len(merges))}
	for i, m := range merges {
		t.merges[i] = m[0] + " " + m[1]
		a, okA := v.ids[m[0]]
		b, okB := v.ids[m[1]]
		c, okC := v.ids[m[0]+m[1]]
		if !okA || !okB || !okC {
			continue
		}
		key := [2]int32{int32(a), int32(b)}
		if _, dup := t.ranks[key]; !dup {
			t.ranks[key] = mergeRule{rank: int32(i), id: int32(c)}
		}
	}
	v.pieces = make([][]byte, len(v.tokens))
	for i, tok := range v.tokens {
		switch v.types[i] {
		case TokenControl, TokenUserDefined:
			v.pieces[i] = []byte(tok)
		case TokenUnused:
			v.pieces[i] = nil
		default:
			v.pieces[i] = ByteLevelDecode(tok)
		}
	}
	return t, nil
}

// newBPEFromGGUF reads a `gpt2` tokenizer from GGUF metadata (see NewTokenizerFromGGUF).
func newBPEFromGGUF(meta map[string]any) (*BPETokenizer, error) {
	v, err := ggufVocab(meta)
	if err != nil {
		return nil, err
	}
	pre, _, err := metaString(meta, KeyTokenizerPre)
	if err != nil {
		return nil, err
	}
	pattern, ignore, err := PreTokenizerPattern(pre)
	if err != nil {
		return nil, err
	}
	if pre == "" {
		pre = "gpt2"
	}
	raw, ok, err := metaStrings(meta, KeyTokenizerMerges)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("tokenizer: metadata key %s is missing (required for %s = \"gpt2\")", KeyTokenizerMerges, KeyTokenizerModel)
	}
	merges := make([][2]string, len(raw))
	for i, m := range raw {
		a, b, err := splitMerge(m)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %s[%d]: %v", KeyTokenizerMerges, i, err)
		}
		merges[i] = [2]string{a, b}
	}
	// llama.cpp: add_bos defaults to true for the LLaMA-3 pre-tokenizer, false for other BPE.
	v.addBOS = ignore
	if b, ok, err := metaBool(meta, KeyTokenizerAddBOS); err != nil {
		return nil, err
	} else if ok {
		v.addBOS = b
	}
	return newBPE(v, merges, pattern, pre, ignore)
}

// splitMerge splits a merge written "left right" at its first space after the first byte (so a
// left part may itself begin with a space, as llama.cpp allows).
func splitMerge(m string) (string, string, error) {
	if len(m) < 3 {
		return "", "", fmt.Errorf("merge %q is not \"left right\"", m)
	}
	i := strings.IndexByte(m[1:], ' ')
	if i < 0 || i+2 >= len(m) {
		return "", "", fmt.Errorf("merge %q is not \"left right\"", m)
	}
	return m[:i+1], m[i+2:], nil
}

// PreTokenizer returns the GGUF pre-tokenizer name ("llama-bpe", "gpt2"; "" for a custom HF
// pattern) and whether pre-tokens found whole in the vocabulary skip the merges.
func (t *BPETokenizer) PreTokenizer() (name string, ignoreMerges bool) { return t.pre, t.ignoreMerges }

// Encode returns the token ids of text (no BOS). With parseSpecial, control tokens written in
// the text (e.g. "<|eot_id|>") become their ids; user-defined tokens always do. Bytes with no
// token (only possible in a vocabulary missing some of the 256 byte tokens) become the unknown
// token, or are dropped when there is none.
func (t *BPETokenizer) Encode(text string, parseSpecial bool) []int {
	return t.encode(t.splitSpecial(text, parseSpecial, nil))
}

// EncodeTemplate returns the token ids of text (no BOS) with control tokens parsed except where
// they overlap a literal span, whose text is tokenized as plain text (see Tokenizer).
func (t *BPETokenizer) EncodeTemplate(text string, literal []Span) []int {
	return t.encode(t.splitSpecial(text, true, literal))
}

// encode tokenizes the fragments of splitSpecial.
func (t *BPETokenizer) encode(frags []fragment) []int {
	var out []int
	cache := map[string][]int{}
	for _, f := range frags {
		if f.id >= 0 {
			out = append(out, f.id)
			continue
		}
		for _, word := range t.words(f.text, f.off == 0) {
			if ids, ok := cache[word]; ok {
				out = append(out, ids...)
				continue
			}
			start := len(out)
			out = t.encodeWord(word, out)
			cache[word] = out[start:len(out):len(out)]
		}
	}
	return out
}

// Decode concatenates the bytes of ids (GPT-2 byte table reversed; special tokens as their text).
// Out-of-range ids are skipped. The result may end inside a UTF-8 character if ids do.
func (t *BPETokenizer) Decode(ids []int) string {
	s := t.decode(ids)
	if t.chain != nil && t.chain.prepends && len(ids) > 0 {
		if p := t.TokenBytes(ids[0]); len(p) > 0 && p[0] == ' ' {
			s = s[1:] // HF Metaspace decoder / Strip: the prepended space of the first token
		}
	}
	return s
}

// preTokenize cuts s into pre-tokens with the pattern. Text the pattern does not match (none, for
// the built-in patterns) is kept as pieces of its own, so no byte is lost; invalid UTF-8 bytes are
// carried through unchanged.
func (t *BPETokenizer) preTokenize(s string) []string {
	runes := []rune(s)
	offs := make([]int, 0, len(runes)+1)
	for i := 0; i < len(s); {
		offs = append(offs, i)
		_, w := utf8.DecodeRuneInString(s[i:])
		i += w
	}
	offs = append(offs, len(s))
	if len(offs) != len(runes)+1 {
		return []string{s}
	}
	var out []string
	pos := 0
	m, err := t.re.FindRunesMatch(runes)
	for m != nil && err == nil {
		if m.Index > pos {
			out = append(out, s[offs[pos]:offs[m.Index]])
		}
		if m.Length > 0 {
			out = append(out, s[offs[m.Index]:offs[m.Index+m.Length]])
		}
		pos = m.Index + m.Length
		m, err = t.re.FindNextMatch(m)
	}
	if pos < len(runes) {
		out = append(out, s[offs[pos]:])
	}
	return out
}

// bpeSymbol is one symbol of a word being merged: a token id (-1: a character with no token) in a
// doubly linked list over the word's characters.
type bpeSymbol struct {
	id         int32
	prev, next int32
	dead       bool
}

// bpePair is a candidate merge of symbols left and right (adjacent when pushed).
type bpePair struct {
	rank, left, right, lid, rid, id int32
}

type bpeQueue []bpePair

func (q bpeQueue) Len() int { return len(q) }
func (q bpeQueue) Less(i, j int) bool {
	if q[i].rank != q[j].rank {
		return q[i].rank < q[j].rank
	}
	return q[i].left < q[j].left
}
func (q bpeQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *bpeQueue) Push(x any)   { *q = append(*q, x.(bpePair)) }
func (q *bpeQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// encodeWord appends the ids of one byte-level-mapped pre-token to out.
func (t *BPETokenizer) encodeWord(word string, out []int) []int {
	if t.ignoreMerges {
		if id, ok := t.ids[word]; ok {
			return append(out, id)
		}
	}
	return t.mergeWord(word, out)
}

// mergeWord appends the ids the merges make of one byte-level-mapped pre-token to out, whether
// or not the pre-token is itself a token.
func (t *BPETokenizer) mergeWord(word string, out []int) []int {
	syms := make([]bpeSymbol, 0, len(word)/2+1)
	for _, r := range word {
		id := int32(-1)
		if x, ok := t.ids[string(r)]; ok {
			id = int32(x)
		} else if fb, ok := t.byteFallbackIDs(r); t.byteFallback && ok {
			for _, b := range fb {
				n := int32(len(syms))
				syms = append(syms, bpeSymbol{id: b, prev: n - 1, next: n + 1})
			}
			continue
		}
		n := int32(len(syms))
		syms = append(syms, bpeSymbol{id: id, prev: n - 1, next: n + 1})
	}
	if len(syms) == 0 {
		return out
	}
	syms[len(syms)-1].next = -1
	var q bpeQueue
	try := func(l, r int32) {
		if l < 0 || r < 0 {
			return
		}
		a, b := syms[l].id, syms[r].id
		if a < 0 || b < 0 {
			return
		}
		if m, ok := t.ranks[[2]int32{a, b}]; ok {
			heap.Push(&q, bpePair{rank: m.rank, left: l, right: r, lid: a, rid: b, id: m.id})
		}
	}
	for i := int32(0); i+1 < int32(len(syms)); i++ {
		try(i, i+1)
	}
	for q.Len() > 0 {
		p := heap.Pop(&q).(bpePair)
		l, r := &syms[p.left], &syms[p.right]
		if l.dead || r.dead || l.next != p.right || l.id != p.lid || r.id != p.rid {
			continue // stale: one side has merged since this pair was queued
		}
		l.id = p.id
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = p.left
		}
		r.dead = true
		try(l.prev, p.left)
		try(p.left, l.next)
	}
	for i := int32(0); i >= 0; i = syms[i].next {
		switch {
		case syms[i].id >= 0:
			out = append(out, int(syms[i].id))
		case t.unk >= 0:
			out = append(out, t.unk)
		}
	}
	return out
}

// Metadata returns the GGUF tokenizer keys that rebuild this tokenizer with NewTokenizerFromGGUF
// (`tokenizer.ggml.model`, `pre`, `tokens`, `token_type`, `merges`, the special ids that exist,
// `add_bos_token`), typed as GGUF stores them (strings, []string, []int32, uint32, bool). It fails
// when the pre-tokenizer has no GGUF name (a custom HF regex) or when its ignore_merges setting
// differs from what that name implies.
func (t *BPETokenizer) Metadata() (map[string]any, error) {
	if t.pre == "" {
		return nil, fmt.Errorf("tokenizer: pre-tokenizer pattern %q has no GGUF %s name", t.pattern, KeyTokenizerPre)
	}
	_, ignore, err := PreTokenizerPattern(t.pre)
	if err != nil {
		return nil, err
	}
	if ignore != t.ignoreMerges {
		// The flag only decides pre-tokens that are tokens the merges do not reach; without
		// one, both settings tokenize every text alike and the GGUF name is exact.
		if tok, id, found := t.unreachablePreToken(); found {
			return nil, fmt.Errorf("tokenizer: ignore_merges = %v but GGUF %s %q implies %v, and that changes tokenization: token %q (id %d) can be a whole pre-token, which the merges do not produce",
				t.ignoreMerges, KeyTokenizerPre, t.pre, ignore, tok, id)
		}
	}
	m := t.vocab.metadata()
	m[KeyTokenizerModel] = "gpt2"
	m[KeyTokenizerPre] = t.pre
	m[KeyTokenizerMerges] = append([]string(nil), t.merges...)
	return m, nil
}

// metadata returns the vocabulary keys shared by both tokenizer models.
func (v *vocab) metadata() map[string]any {
	types := make([]int32, len(v.types))
	for i, x := range v.types {
		types[i] = int32(x)
	}
	m := map[string]any{
		KeyTokenizerTokens:    append([]string(nil), v.tokens...),
		KeyTokenizerTokenType: types,
		KeyTokenizerAddBOS:    v.addBOS,
	}
	for key, id := range map[string]int{KeyTokenizerBOS: v.bos, KeyTokenizerEOS: v.eos, KeyTokenizerEOT: v.eot, KeyTokenizerUNK: v.unk} {
		if id >= 0 {
			m[key] = uint32(id)
		}
	}
	return m
}
