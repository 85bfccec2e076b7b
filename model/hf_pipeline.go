package model

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"github.com/dlclark/regexp2"
	"golang.org/x/text/unicode/norm"
)

// This file holds the parts of HF tokenizers' pipeline (huggingface/tokenizers, tokenizers/src)
// that SentencePiece-derived and Falcon tokenizer.json files use beyond a single byte-level regex:
// the normalizers NFC, NFKC, Prepend, Replace and Sequence, and the pre-tokenizers Punctuation,
// Digits, Metaspace, Split and ByteLevel chained in a Sequence. HF applies them in this order to
// every span of text between added tokens: normalizer, then each pre-tokenizer to every piece the
// previous one produced, then the model to each final piece.

// preStep is one pre-tokenizer of a chain: it cuts piece (first reports whether the piece starts at
// byte 0 of the original input, HF's `offsets_original().0 == 0`) into pieces.
type preStep func(piece string, first bool) []string

// hfSeg is a run of text and whether it matched a split pattern.
type hfSeg struct {
	s     string
	match bool
}

// hfApplyBehavior turns matched/unmatched runs into pieces the way HF's
// NormalizedString::split does for each SplitDelimiterBehavior (tokenizer/normalizer.rs):
// "the-final--countdown" split at '-' gives Isolated [the - final - - countdown], Contiguous
// [the - final -- countdown], Removed [the final countdown], MergedWithPrevious [the- final- -
// countdown], MergedWithNext [the -final - -countdown].
func hfApplyBehavior(segs []hfSeg, behavior string) []string {
	var out []string
	prevMatch := false
	for i, g := range segs {
		if g.s == "" {
			continue
		}
		switch behavior {
		case "Removed":
			if !g.match {
				out = append(out, g.s)
			}
		case "Contiguous":
			if g.match && i > 0 && prevMatch && len(out) > 0 {
				out[len(out)-1] += g.s
			} else {
				out = append(out, g.s)
			}
		case "MergedWithPrevious":
			if g.match && !prevMatch && len(out) > 0 {
				out[len(out)-1] += g.s
			} else {
				out = append(out, g.s)
			}
		case "MergedWithNext":
			if !g.match && prevMatch && len(out) > 0 {
				out[len(out)-1] += g.s
			} else {
				out = append(out, g.s)
			}
		default: // Isolated
			out = append(out, g.s)
		}
		prevMatch = g.match
	}
	return out
}

// hfRuneSegs cuts s into single matching runes and the runs between them.
func hfRuneSegs(s string, match func(rune) bool) []hfSeg {
	var segs []hfSeg
	start := 0
	for i, r := range s {
		if match(r) {
			if i > start {
				segs = append(segs, hfSeg{s: s[start:i]})
			}
			w := len(string(r))
			segs = append(segs, hfSeg{s: s[i : i+w], match: true})
			start = i + w
		}
	}
	if start < len(s) {
		segs = append(segs, hfSeg{s: s[start:]})
	}
	return segs
}

// regexIsolate returns a step that keeps every match of re and every run between matches as
// pieces (HF Split with behavior Isolated; llama.cpp's unicode_regex_split for each regex of a
// chain).
func regexIsolate(re *regexp2.Regexp) preStep {
	t := &BPETokenizer{re: re}
	return func(s string, _ bool) []string { return t.preTokenize(s) }
}

// hfIsPunct is HF's Punctuation test (pre_tokenizers/punctuation.rs is_punc): ASCII punctuation
// (which includes $ + < = > ^ ` | ~) or a Unicode P* character.
func hfIsPunct(r rune) bool {
	return unicode.IsPunct(r) || strings.ContainsRune("$+<=>^`|~", r)
}

// hfNormalizer is a parsed tokenizer.json normalizer.
type hfNormalizer func(string) string

// parseHFNormalizer reads a tokenizer.json normalizer: NFC, NFKC (golang.org/x/text/unicode/norm),
// Prepend (prepends `prepend` to non-empty text, normalizers/prepend.rs), Replace (a String or
// Regex `pattern` replaced by `content` everywhere, normalizers/replace.rs), and Sequence of
// these. null gives nil. Anything else is an error naming the type.
func parseHFNormalizer(raw json.RawMessage) (hfNormalizer, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var n struct {
		Type        string            `json:"type"`
		Normalizers []json.RawMessage `json:"normalizers"`
		Prepend     *string           `json:"prepend"`
		Pattern     struct {
			Regex  *string `json:"Regex"`
			String *string `json:"String"`
		} `json:"pattern"`
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, err
	}
	switch n.Type {
	case "NFC":
		return norm.NFC.String, nil
	case "NFKC":
		return norm.NFKC.String, nil
	case "Prepend":
		if n.Prepend == nil {
			return nil, fmt.Errorf("normalizer Prepend has no \"prepend\"")
		}
		p := *n.Prepend
		return func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		}, nil
	case "Replace":
		if n.Content == nil {
			return nil, fmt.Errorf("normalizer Replace has no \"content\"")
		}
		content := *n.Content
		switch {
		case n.Pattern.String != nil && *n.Pattern.String != "":
			old := *n.Pattern.String
			return func(s string) string { return strings.ReplaceAll(s, old, content) }, nil
		case n.Pattern.Regex != nil && *n.Pattern.Regex != "":
			re, err := regexp2.Compile(*n.Pattern.Regex, regexp2.None)
			if err != nil {
				return nil, fmt.Errorf("normalizer Replace pattern %q: %v", *n.Pattern.Regex, err)
			}
			lit := strings.ReplaceAll(content, "$", "$$")
			return func(s string) string {
				out, err := re.Replace(s, lit, -1, -1)
				if err != nil {
					return s
				}
				return out
			}, nil
		}
		return nil, fmt.Errorf("normalizer Replace has no pattern")
	case "Sequence":
		var seq []hfNormalizer
		for i, r := range n.Normalizers {
			f, err := parseHFNormalizer(r)
			if err != nil {
				return nil, fmt.Errorf("normalizers[%d]: %v", i, err)
			}
			if f != nil {
				seq = append(seq, f)
			}
		}
		return func(s string) string {
			for _, f := range seq {
				s = f(s)
			}
			return s
		}, nil
	}
	return nil, fmt.Errorf("normalizer %q is not supported (want NFC, NFKC, Prepend, Replace, Sequence or null)", n.Type)
}

// hfChain is a parsed pre_tokenizer tree.
type hfChain struct {
	steps     []preStep
	byteLevel bool // a ByteLevel step maps pieces to GPT-2's byte alphabet
	prepends  bool // Metaspace or Prepend adds a leading "▁" (decode drops one leading space)
	metaspace bool // a Metaspace step: a SentencePiece-style vocabulary
}

// parseHFChain reads a pre_tokenizer (null, one node, or a Sequence) into steps: Split (Regex or
// String pattern, behavior Isolated, not inverted), ByteLevel (use_regex splits with PatternGPT2;
// add_prefix_space; then maps the bytes of each piece, so later steps see the byte alphabet, as in
// HF), Punctuation (behavior, default Isolated), Digits (individual_digits: each Unicode number
// character alone, else runs of them; pre_tokenizers/digits.rs `char::is_numeric`), Metaspace
// (replacement, prepend_scheme always/first/never — or the older add_prefix_space —, split;
// pre_tokenizers/metaspace.rs). Anything else is an error naming the type.
func parseHFChain(raw json.RawMessage) (*hfChain, error) {
	c := &hfChain{}
	if len(raw) == 0 || string(raw) == "null" {
		return c, nil
	}
	var p struct {
		hfPreTokenizer
		IndividualDigits bool    `json:"individual_digits"`
		Replacement      *string `json:"replacement"`
		PrependScheme    *string `json:"prepend_scheme"`
		Split            *bool   `json:"split"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, err
	}
	behavior := p.Behavior
	if behavior == "" {
		behavior = "Isolated"
	}
	switch p.Type {
	case "Sequence":
		for i, r := range p.Pretokenizers {
			sub, err := parseHFChain(r)
			if err != nil {
				return nil, fmt.Errorf("pretokenizers[%d]: %v", i, err)
			}
			if sub.byteLevel && c.byteLevel {
				return nil, fmt.Errorf("pretokenizers[%d]: more than one ByteLevel", i)
			}
			c.steps = append(c.steps, sub.steps...)
			c.byteLevel = c.byteLevel || sub.byteLevel
			c.prepends = c.prepends || sub.prepends
			c.metaspace = c.metaspace || sub.metaspace
		}
	case "Split":
		if p.Behavior != "Isolated" || p.Invert {
			return nil, fmt.Errorf("Split behavior %q invert %v is not supported (want Isolated, false)", p.Behavior, p.Invert)
		}
		var pattern string
		switch {
		case p.Pattern.Regex != nil && *p.Pattern.Regex != "":
			pattern = *p.Pattern.Regex
		case p.Pattern.String != nil && *p.Pattern.String != "":
			pattern = regexp2Escape(*p.Pattern.String)
		default:
			return nil, fmt.Errorf("Split has no pattern")
		}
		re, err := regexp2.Compile(pattern, regexp2.None)
		if err != nil {
			return nil, fmt.Errorf("Split pattern %q: %v", pattern, err)
		}
		c.steps = append(c.steps, regexIsolate(re))
	case "ByteLevel":
		c.byteLevel = true
		var split preStep
		if p.UseRegex == nil || *p.UseRegex {
			split = regexIsolate(regexp2.MustCompile(PatternGPT2, regexp2.None))
		}
		addPrefix := p.AddPrefixSpace
		c.steps = append(c.steps, func(s string, first bool) []string {
			if addPrefix && !strings.HasPrefix(s, " ") {
				s = " " + s
			}
			pieces := []string{s}
			if split != nil {
				pieces = split(s, first)
			}
			for i := range pieces {
				pieces[i] = ByteLevelEncode(pieces[i])
			}
			return pieces
		})
	case "Punctuation":
		c.steps = append(c.steps, func(s string, _ bool) []string {
			return hfApplyBehavior(hfRuneSegs(s, hfIsPunct), behavior)
		})
	case "Digits":
		b := "Contiguous"
		if p.IndividualDigits {
			b = "Isolated"
		}
		c.steps = append(c.steps, func(s string, _ bool) []string {
			return hfApplyBehavior(hfRuneSegs(s, unicode.IsNumber), b)
		})
	case "Metaspace":
		rep := "▁"
		if p.Replacement != nil {
			if len([]rune(*p.Replacement)) != 1 {
				return nil, fmt.Errorf("Metaspace replacement %q is not one character", *p.Replacement)
			}
			rep = *p.Replacement
		}
		scheme := "always"
		switch {
		case p.PrependScheme != nil:
			scheme = *p.PrependScheme
		case !p.AddPrefixSpace && strings.Contains(string(raw), `"add_prefix_space"`):
			scheme = "never"
		}
		if scheme != "always" && scheme != "first" && scheme != "never" {
			return nil, fmt.Errorf("Metaspace prepend_scheme %q is not supported (want always, first, never)", scheme)
		}
		split := p.Split == nil || *p.Split
		c.prepends, c.metaspace = scheme != "never", true
		repRune := []rune(rep)[0]
		c.steps = append(c.steps, func(s string, first bool) []string {
			s = strings.ReplaceAll(s, " ", rep)
			if (scheme == "always" || scheme == "first" && first) && !strings.HasPrefix(s, rep) {
				s = rep + s
			}
			if !split {
				return []string{s}
			}
			return hfApplyBehavior(hfRuneSegs(s, func(r rune) bool { return r == repRune }), "MergedWithNext")
		})
	default:
		return nil, fmt.Errorf("pre-tokenizer type %q is not supported (want ByteLevel, Split, Punctuation, Digits, Metaspace, Sequence)", p.Type)
	}
	return c, nil
}

// runSteps cuts text (a span between added tokens; first: it starts the input) with the chain.
func runSteps(steps []preStep, text string, first bool) []string {
	pieces := []string{text}
	for _, st := range steps {
		var next []string
		for i, p := range pieces {
			next = append(next, st(p, first && i == 0)...)
		}
		pieces = next
	}
	return pieces
}

// words returns the pieces of one span of text that the model encodes: for a GGUF or single-regex
// tokenizer the regex pre-tokens mapped to the byte alphabet; for an HF chain the normalized text
// cut by every step.
func (t *BPETokenizer) words(s string, first bool) []string {
	if t.chain == nil {
		if t.addPrefixSpace && !strings.HasPrefix(s, " ") {
			s = " " + s
		}
		w := t.preTokenize(s)
		for i := range w {
			w[i] = ByteLevelEncode(w[i])
		}
		return w
	}
	if t.normalize != nil {
		s = t.normalize(s)
	}
	return runSteps(t.chain.steps, s, first)
}

// byteFallbackIDs returns the ids of `<0xNN>` for each byte of r (HF BPE byte_fallback,
// models/bpe/model.rs merge_word), false when one is missing.
func (t *BPETokenizer) byteFallbackIDs(r rune) ([]int32, bool) {
	var out []int32
	for _, b := range []byte(string(r)) {
		id, ok := t.ids[fmt.Sprintf("<0x%02X>", b)]
		if !ok {
			return nil, false
		}
		out = append(out, int32(id))
	}
	return out, true
}

// setCharLevelPieces makes normal tokens of a non-byte-level (SentencePiece-style) vocabulary
// decode with the Metaspace replacement as a space and `<0xNN>` as its byte (HF decoders
// Replace/Metaspace and ByteFallback).
func (t *BPETokenizer) setCharLevelPieces() {
	for i, tok := range t.tokens {
		if t.types[i] != TokenNormal {
			continue
		}
		if b, ok := parseByteToken(tok); ok {
			t.pieces[i] = []byte{b}
			continue
		}
		t.pieces[i] = []byte(strings.ReplaceAll(tok, "▁", " "))
	}
}

// hfHasPrepend reports whether a normalizer (possibly a Sequence) contains Prepend, whose
// leading "▁" the matching decoder (Strip) removes again.
func hfHasPrepend(raw json.RawMessage) bool {
	return strings.Contains(string(raw), `"Prepend"`)
}
