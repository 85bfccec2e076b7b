package model

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// testSPMMeta is a SentencePiece vocabulary written out by hand:
//
//	0 <unk> (unknown)  1 <s>, 2 </s> (control)  3..258 <0x00>..<0xFF> (byte: id = 3 + byte)
//	259 "▁" -5   260 "h" -5   261 "e" -5   262 "l" -5   263 "o" -5
//	264 "ll" -1   265 "he" -2   266 "hell" -0.5   267 "hello" -0.1   268 "▁hello" -0.05
//	269 "lo" -0.2 (only when withLo)
const (
	sUnk, sBOS, sEOS                 = 0, 1, 2
	sSpace, sH, sE, sL, sO           = 259, 260, 261, 262, 263
	sLL, sHE, sHELL, sHELLO, sSHELLO = 264, 265, 266, 267, 268
	sLO                              = 269
)

func sByte(b byte) int { return 3 + int(b) }

func testSPMMeta(withLo bool) map[string]any {
	tokens := []string{"<unk>", "<s>", "</s>"}
	types := []int32{int32(TokenUnknown), int32(TokenControl), int32(TokenControl)}
	scores := []float32{0, 0, 0}
	for b := 0; b < 256; b++ {
		tokens = append(tokens, fmt.Sprintf("<0x%02X>", b))
		types = append(types, int32(TokenByte))
		scores = append(scores, 0)
	}
	pieces := []struct {
		s     string
		score float32
	}{{"▁", -5}, {"h", -5}, {"e", -5}, {"l", -5}, {"o", -5}, {"ll", -1}, {"he", -2}, {"hell", -0.5},
		{"hello", -0.1}, {"▁hello", -0.05}}
	if withLo {
		pieces = append(pieces, struct {
			s     string
			score float32
		}{"lo", -0.2})
	}
	for _, p := range pieces {
		tokens = append(tokens, p.s)
		types = append(types, int32(TokenNormal))
		scores = append(scores, p.score)
	}
	return map[string]any{
		"tokenizer.ggml.model":            "llama",
		"tokenizer.ggml.tokens":           tokens,
		"tokenizer.ggml.scores":           scores,
		"tokenizer.ggml.token_type":       types,
		"tokenizer.ggml.bos_token_id":     uint32(sBOS),
		"tokenizer.ggml.eos_token_id":     uint32(sEOS),
		"tokenizer.ggml.unknown_token_id": uint32(sUnk),
	}
}

func newTestSPM(t testing.TB, withLo bool) *SPMTokenizer {
	t.Helper()
	tok, err := NewTokenizerFromGGUF(testSPMMeta(withLo))
	require.NoError(t, err)
	return tok.(*SPMTokenizer)
}

func TestSPMMergeByScore(t *testing.T) {
	tok := newTestSPM(t, false)
	// "hello" → "▁hello": pairs in the vocabulary are he (-2) and ll (-1); ll merges first, then
	// he, then he+ll = hell (-0.5), hell+o = hello (-0.1), ▁+hello = ▁hello (-0.05).
	require.Equal(t, []int{sSHELLO}, tok.Encode("hello", false))
	// With "lo" (-0.2) in the vocabulary it beats ll (-1): ▁ h e l lo; the queued ll is stale;
	// he merges; nothing else is a token: ▁ he l lo.
	require.Equal(t, []int{sSpace, sHE, sL, sLO}, newTestSPM(t, true).Encode("hello", false))
	// Equal scores merge the leftmost pair first: ▁lll → ▁ ll l.
	require.Equal(t, []int{sSpace, sLL, sL}, tok.Encode("lll", false))
	// "hello world": ▁hello, then ▁ w o r l d where w, r and d have no token: byte fallback.
	require.Equal(t, []int{sSHELLO, sSpace, sByte('w'), sO, sByte('r'), sL, sByte('d')}, tok.Encode("hello world", false))
	require.Equal(t, "hello world", tok.Decode([]int{sSHELLO, sSpace, sByte('w'), sO, sByte('r'), sL, sByte('d')}))
	require.Empty(t, tok.Encode("", true))
	require.True(t, tok.AddBOS(), "SentencePiece defaults add_bos to true")
	require.True(t, tok.AddSpacePrefix())
	require.Equal(t, float32(-0.05), tok.Score(sSHELLO))
	require.Equal(t, sUnk, func() int { id, _ := tok.TokenID("<unk>"); return id }())
}

func TestSPMByteFallback(t *testing.T) {
	tok := newTestSPM(t, false)
	// "hé" → ▁ h é; é (C3 A9) is no token, so it becomes <0xC3> <0xA9>.
	ids := tok.Encode("hé", false)
	require.Equal(t, []int{sSpace, sH, sByte(0xC3), sByte(0xA9)}, ids)
	require.Equal(t, []int{198, 172}, ids[2:])
	require.Equal(t, "hé", tok.Decode(ids))
	require.Equal(t, []byte{0xC3}, tok.TokenBytes(sByte(0xC3)))
	// The leading space of the first piece is the dummy prefix and is dropped by Decode only.
	require.Equal(t, " hello", string(tok.TokenBytes(sSHELLO)))
	require.Equal(t, "hello hello", tok.Decode([]int{sSHELLO, sSHELLO}))
}

func TestSPMSpecialAndSpacePrefix(t *testing.T) {
	tok := newTestSPM(t, false)
	// A span after a special token gets the space prefix too (llama.cpp).
	require.Equal(t, []int{sBOS, sSHELLO}, tok.Encode("<s>hello", true))
	// Not parsed: ▁ < s > hello, with <, s and > as bytes.
	require.Equal(t, []int{sSpace, sByte('<'), sByte('s'), sByte('>'), sHELLO}, tok.Encode("<s>hello", false))
	require.True(t, tok.IsControl(sBOS))
	require.Equal(t, "<s> hello", tok.Decode([]int{sBOS, sSHELLO}))

	meta := testSPMMeta(false)
	meta["tokenizer.ggml.add_space_prefix"] = false
	meta["tokenizer.ggml.add_bos_token"] = false
	noSpace, err := NewTokenizerFromGGUF(meta)
	require.NoError(t, err)
	require.Equal(t, []int{sHELLO}, noSpace.Encode("hello", false))
	require.Equal(t, " hello", noSpace.Decode([]int{sSHELLO}))
	require.False(t, noSpace.AddBOS())
}

func TestSPMUntypedByteTokens(t *testing.T) {
	meta := testSPMMeta(false)
	delete(meta, "tokenizer.ggml.token_type")
	tok, err := NewTokenizerFromGGUF(meta)
	require.NoError(t, err)
	require.Equal(t, []int{sSpace, sH, sByte(0xC3), sByte(0xA9)}, tok.Encode("hé", false))
	require.Equal(t, TokenByte, tok.(*SPMTokenizer).TokenType(sByte(0)))
	require.Equal(t, sUnk, tok.(*SPMTokenizer).unk, "<unk> is found by name")
}

func TestSPMRoundTrip(t *testing.T) {
	for _, withLo := range []bool{false, true} {
		tok := newTestSPM(t, withLo)
		for _, s := range append(trickyStrings, "\xff\xfe invalid \xc3", " hello", "hello  ") {
			ids := tok.Encode(s, false)
			require.Equal(t, s, tok.Decode(ids), "input %q", s)
			require.NotContains(t, ids, sUnk, "input %q", s)
		}
	}
}

func TestSPMMetadataRoundTrip(t *testing.T) {
	tok := newTestSPM(t, true)
	meta, err := tok.Metadata()
	require.NoError(t, err)
	require.Equal(t, "llama", meta["tokenizer.ggml.model"])
	require.Equal(t, uint32(sUnk), meta["tokenizer.ggml.unknown_token_id"])
	again, err := NewTokenizerFromGGUF(meta)
	require.NoError(t, err)
	for _, s := range trickyStrings {
		require.Equal(t, tok.Encode(s, true), again.Encode(s, true), "input %q", s)
	}
}

func FuzzSPMRoundTrip(f *testing.F) {
	for _, s := range trickyStrings {
		f.Add(s)
	}
	tok := newTestSPM(f, true)
	f.Fuzz(func(t *testing.T, s string) {
		ids := tok.Encode(s, false)
		if strings.Contains(s, spmSpace) {
			return // a literal ▁ decodes as a space: SentencePiece cannot round-trip it
		}
		if got := tok.Decode(ids); got != s {
			t.Fatalf("Decode(Encode(%q)) = %q (ids %v)", s, got, ids)
		}
	})
}
