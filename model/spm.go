package model

import (
	"container/heap"
	"fmt"
	"strings"
	"unicode/utf8"
)

// spmSpace is SentencePiece's visible space, U+2581 "▁", which stands for ' ' in pieces.
const spmSpace = "\u2581"

// SPMTokenizer is a SentencePiece-style tokenizer with scores (GGUF `tokenizer.ggml.model =
// llama`, the LLaMA-1/2 vocabulary), following llama.cpp's llm_tokenizer_spm: spaces become `▁`
// (with one `▁` prepended to each text span when add_space_prefix is on), the text starts as one
// symbol per UTF-8 character, and the adjacent pair whose concatenation is a token with the highest
// score is merged repeatedly (leftmost first on equal scores). A final symbol with no token falls
// back to its bytes as `<0xNN>` tokens. Safe for concurrent use.
type SPMTokenizer struct {
	*vocab
	scores         []float32
	addSpacePrefix bool
	byteIDs        [256]int // id of <0xNN>, -1 if missing
}

// newSPMFromGGUF reads a `llama` tokenizer from GGUF metadata (see NewTokenizerFromGGUF).
func newSPMFromGGUF(meta map[string]any) (*SPMTokenizer, error) {
	v, err := ggufVocab(meta)
	if err != nil {
		return nil, err
	}
	scores, ok, err := metaFloats(meta, KeyTokenizerScores)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("tokenizer: metadata key %s is missing (required for %s = \"llama\")", KeyTokenizerScores, KeyTokenizerModel)
	}
	if len(scores) != len(v.tokens) {
		return nil, fmt.Errorf("tokenizer: %s has %d entries, %s has %d", KeyTokenizerScores, len(scores), KeyTokenizerTokens, len(v.tokens))
	}
	_, typed := meta[KeyTokenizerTokenType]
	v.addBOS = true
	if b, ok, err := metaBool(meta, KeyTokenizerAddBOS); err != nil {
		return nil, err
	} else if ok {
		v.addBOS = b
	}
	space := true
	if b, ok, err := metaBool(meta, KeyTokenizerAddSpace); err != nil {
		return nil, err
	} else if ok {
		space = b
	}
	if v.unk < 0 {
		if id, ok := v.ids["<unk>"]; ok {
			v.unk = id
		}
	}
	return newSPM(v, scores, space, typed), nil
}

// newSPM finishes an SPM tokenizer: byte tokens and the bytes each id decodes to. When the file
// gave no token types (typed is false), tokens spelled exactly `<0xNN>` are taken as byte tokens.
func newSPM(v *vocab, scores []float32, addSpacePrefix, typed bool) *SPMTokenizer {
	t := &SPMTokenizer{vocab: v, scores: scores, addSpacePrefix: addSpacePrefix}
	for i := range t.byteIDs {
		t.byteIDs[i] = -1
	}
	v.pieces = make([][]byte, len(v.tokens))
	for i, tok := range v.tokens {
		if b, ok := parseByteToken(tok); ok && (v.types[i] == TokenByte || (!typed && v.types[i] == TokenNormal)) {
			v.types[i] = TokenByte
			if t.byteIDs[b] < 0 {
				t.byteIDs[b] = i
			}
			v.pieces[i] = []byte{b}
			continue
		}
		switch v.types[i] {
		case TokenControl, TokenUserDefined:
			v.pieces[i] = []byte(tok)
		case TokenUnused:
			v.pieces[i] = nil
		default:
			v.pieces[i] = []byte(strings.ReplaceAll(tok, spmSpace, " "))
		}
	}
	return t
}

// parseByteToken parses SentencePiece's byte-fallback spelling "<0xNN>" (two upper- or
// lower-case hex digits).
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexDigit(s[3])
	lo, ok2 := hexDigit(s[4])
	return hi<<4 | lo, ok1 && ok2
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// Encode returns the token ids of text (no BOS). Special tokens are split out first (control
// tokens only with parseSpecial); each remaining span gets a leading space when add_space_prefix
// is on and it is the first span or follows a special token (llama.cpp's rule), then spaces become
// `▁` and the score-driven merge runs. Bytes with no byte token become the unknown token, or are
// dropped when there is none.
func (t *SPMTokenizer) Encode(text string, parseSpecial bool) []int {
	return t.encode(t.splitSpecial(text, parseSpecial, nil))
}

// EncodeTemplate returns the token ids of text (no BOS) with control tokens parsed except where
// they overlap a literal span, whose text is tokenized as plain text (see Tokenizer).
func (t *SPMTokenizer) EncodeTemplate(text string, literal []Span) []int {
	return t.encode(t.splitSpecial(text, true, literal))
}

// encode tokenizes the fragments of splitSpecial.
func (t *SPMTokenizer) encode(frags []fragment) []int {
	var out []int
	prevSpecial := true
	for _, f := range frags {
		if f.id >= 0 {
			out = append(out, f.id)
			prevSpecial = true
			continue
		}
		s := f.text
		if t.addSpacePrefix && prevSpecial {
			s = " " + s
		}
		out = t.encodeSpan(strings.ReplaceAll(s, " ", spmSpace), out)
		prevSpecial = false
	}
	return out
}

// Decode concatenates the pieces of ids (`▁` as space, `<0xNN>` as its byte, special tokens as
// their text). With add_space_prefix, a leading space of the first id's piece is dropped
// (llama.cpp's detokenize), so Decode(Encode(s)) == s for text without special tokens or `▁`.
// Out-of-range ids are skipped.
func (t *SPMTokenizer) Decode(ids []int) string {
	s := t.decode(ids)
	if t.addSpacePrefix && len(ids) > 0 {
		if p := t.TokenBytes(ids[0]); len(p) > 0 && p[0] == ' ' {
			s = s[1:]
		}
	}
	return s
}

// AddSpacePrefix reports whether Encode prepends a space to text (`tokenizer.ggml.add_space_prefix`).
func (t *SPMTokenizer) AddSpacePrefix() bool { return t.addSpacePrefix }

// Score returns the SentencePiece score of id (0 for an out-of-range id).
func (t *SPMTokenizer) Score(id int) float32 {
	if id < 0 || id >= len(t.scores) {
		return 0
	}
	return t.scores[id]
}

// spmSymbol is a byte span [start, end) of the escaped text in a linked list of symbols.
type spmSymbol struct {
	start, end int
	prev, next int
}

// spmPair is a candidate merge of adjacent symbols left and right into a span of size bytes.
type spmPair struct {
	score       float32
	left, right int
	size        int
}

type spmQueue []spmPair

func (q spmQueue) Len() int { return len(q) }
func (q spmQueue) Less(i, j int) bool {
	if q[i].score != q[j].score {
		return q[i].score > q[j].score
	}
	return q[i].left < q[j].left
}
func (q spmQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *spmQueue) Push(x any)   { *q = append(*q, x.(spmPair)) }
func (q *spmQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// encodeSpan appends the ids of one escaped span (spaces already `▁`) to out.
func (t *SPMTokenizer) encodeSpan(s string, out []int) []int {
	if s == "" {
		return out
	}
	syms := make([]spmSymbol, 0, len(s))
	for i := 0; i < len(s); {
		_, w := utf8.DecodeRuneInString(s[i:])
		n := len(syms)
		syms = append(syms, spmSymbol{start: i, end: i + w, prev: n - 1, next: n + 1})
		i += w
	}
	syms[len(syms)-1].next = -1
	var q spmQueue
	try := func(l, r int) {
		if l < 0 || r < 0 {
			return
		}
		if id, ok := t.ids[s[syms[l].start:syms[r].end]]; ok {
			heap.Push(&q, spmPair{score: t.scores[id], left: l, right: r, size: syms[r].end - syms[l].start})
		}
	}
	for i := 0; i+1 < len(syms); i++ {
		try(i, i+1)
	}
	for q.Len() > 0 {
		p := heap.Pop(&q).(spmPair)
		l, r := &syms[p.left], &syms[p.right]
		if l.end == l.start || r.end == r.start || l.next != p.right || r.end-l.start != p.size {
			continue // stale: one side has merged since this pair was queued
		}
		l.end = r.end
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = p.left
		}
		r.start, r.end = 0, 0
		try(l.prev, p.left)
		try(p.left, l.next)
	}
	for i := 0; i >= 0; i = syms[i].next {
		piece := s[syms[i].start:syms[i].end]
		if id, ok := t.ids[piece]; ok {
			out = append(out, id)
			continue
		}
		for j := 0; j < len(piece); j++ {
			switch {
			case t.byteIDs[piece[j]] >= 0:
				out = append(out, t.byteIDs[piece[j]])
			case t.unk >= 0:
				out = append(out, t.unk)
			}
		}
	}
	return out
}

// Metadata returns the GGUF tokenizer keys that rebuild this tokenizer with NewTokenizerFromGGUF
// (`tokenizer.ggml.model = llama`, `tokens`, `scores`, `token_type`, `add_space_prefix`, the
// special ids that exist, `add_bos_token`), typed as GGUF stores them.
func (t *SPMTokenizer) Metadata() (map[string]any, error) {
	m := t.vocab.metadata()
	m[KeyTokenizerModel] = "llama"
	m[KeyTokenizerScores] = append([]float32(nil), t.scores...)
	m[KeyTokenizerAddSpace] = t.addSpacePrefix
	return m, nil
}
