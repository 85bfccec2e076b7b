package model

import (
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestByteLevelTable(t *testing.T) {
	require.Equal(t, 'Ġ', byteToRune[' '])
	require.Equal(t, 'Ċ', byteToRune['\n'])
	require.Equal(t, 'ĉ', byteToRune['\t'])
	require.Equal(t, 'Ā', byteToRune[0])
	require.Equal(t, 'a', byteToRune['a'])
	require.Equal(t, 'ġ', byteToRune[0x7F]) // 0x7F is the 34th non-printable byte: U+0100+33
	require.Equal(t, 'Ń', byteToRune[0xAD]) // soft hyphen, the last one: U+0100+67
	require.Len(t, runeToByte, 256)
	require.Equal(t, "helloĠworldĊ", ByteLevelEncode("hello world\n"))
	require.Equal(t, "Ã©", ByteLevelEncode("é"))
	require.Equal(t, []byte("é\xff"), ByteLevelDecode(ByteLevelEncode("é\xff")))
}

func TestBPEMergesByRank(t *testing.T) {
	tok := newTestBPE(t, "gpt2")
	// "hello": h e l l o → (l l, rank 0) h e ll o → (h e, 1) he ll o → (he ll, 2) hell o →
	// (hell o, 5) hello.
	// " world": Ġ w o r l d → (Ġ w, 3) Ġw o r l d → (o r, 4) Ġw or l d → (Ġw or, 6) Ġwor l d;
	// no merge joins "Ġwor" and "l", so l and d stay byte tokens.
	require.Equal(t, []int{tHELLO, tGWOR, 'l', 'd'}, tok.Encode("hello world", false))
	// Equal ranks merge leftmost first: "lll" → ll l.
	require.Equal(t, []int{tLL, 'l'}, tok.Encode("lll", false))
	// "hellhello": both "l l" pairs (rank 0) merge, then both "h e", then "he ll" twice, then
	// "hell o" at the end.
	require.Equal(t, []int{tHELL, tHELLO}, tok.Encode("hellhello", false))
	require.Equal(t, "hello world", tok.Decode([]int{tHELLO, tGWOR, 'l', 'd'}))
	require.Empty(t, tok.Encode("", true))
}

func TestBPEIgnoreMerges(t *testing.T) {
	// "Ġworld" is a token that no merge chain reaches. The LLaMA-3 pre-tokenizer ("llama-bpe")
	// emits a pre-token found whole in the vocabulary without merging (HF ignore_merges), so
	// " world" is one token there and three under "gpt2".
	require.Equal(t, []int{tHELLO, tGWORLD}, newTestBPE(t, "llama-bpe").Encode("hello world", false))
	require.Equal(t, []int{tHELLO, tGWOR, 'l', 'd'}, newTestBPE(t, "gpt2").Encode("hello world", false))
	name, ignore := newTestBPE(t, "llama3").PreTokenizer()
	require.Equal(t, "llama3", name)
	require.True(t, ignore)
}

func TestBPESpecialTokens(t *testing.T) {
	tok := newTestBPE(t, "gpt2")
	require.Equal(t, []int{'h', 'i', tEOT, tHELLO}, tok.Encode("hi<|eot_id|>hello", true))
	// Not parsed: GPT-2 pre-tokens "hi" "<|" "eot" "_" "id" "|>" "hello", byte by byte.
	require.Equal(t, []int{'h', 'i', '<', '|', 'e', 'o', 't', '_', 'i', 'd', '|', '>', tHELLO},
		tok.Encode("hi<|eot_id|>hello", false))
	// User-defined tokens are matched whether or not special tokens are parsed.
	require.Equal(t, []int{'a', tTool, 'b'}, tok.Encode("a<tool>b", false))
	require.Equal(t, []int{tBOT, tEOT, tEOT}, tok.Encode("<|begin_of_text|><|eot_id|><|eot_id|>", true))
	require.Equal(t, "<|eot_id|>hello", tok.Decode([]int{tEOT, tHELLO}))
	require.Equal(t, "hello", tok.Decode([]int{-5, tHELLO, 9999}), "out-of-range ids are skipped")
}

func TestPreTokenizerLlama3(t *testing.T) {
	tok := newTestBPE(t, "llama-bpe")
	cases := map[string][]string{
		"Hello world":                 {"Hello", " world"},
		"12345":                       {"123", "45"},
		"1234567 89":                  {"123", "456", "7", " ", "89"},
		"I'm here, they'll GO'RE":     {"I", "'m", " here", ",", " they", "'ll", " GO", "'RE"},
		"a  b\n\n c   ":               {"a", " ", " b", "\n\n", " c", "   "},
		"😀 你好":                        {"😀", " 你好"},
		"x=1+22":                      {"x", "=", "1", "+", "22"},
		"hello.\nWorld":               {"hello", ".\n", "World"},
		"hi<|eot_id|>hello":           {"hi", "<|", "eot", "_id", "|>", "hello"},
		"\tindent":                    {"\tindent"},
		"price: $1000!!":              {"price", ":", " $", "100", "0", "!!"},
		"naïve\u00a0café":             {"naïve", "\u00a0café"},
		"\xff\xfeab":                  {"\xff\xfe", "ab"},
		"line1\r\n\r\nline2":          {"line", "1", "\r\n\r\n", "line", "2"},
		"It's 's 'S 'Ll 'x":           {"It", "'s", " '", "s", " '", "S", " '", "Ll", " '", "x"},
		"end with space ":             {"end", " with", " space", " "},
		"a\n":                         {"a", "\n"},
		"multiple   spaces in middle": {"multiple", "  ", " spaces", " in", " middle"},
	}
	for in, want := range cases {
		require.Equal(t, want, tok.preTokenize(in), "input %q", in)
	}
}

func TestPreTokenizerGPT2(t *testing.T) {
	tok := newTestBPE(t, "gpt2")
	cases := map[string][]string{
		"Hello world":  {"Hello", " world"},
		"12345":        {"12345"},
		"GO'RE I'm":    {"GO", "'", "RE", " I", "'m"},
		"a  b":         {"a", " ", " b"},
		"x=1+22":       {"x", "=", "1", "+", "22"},
		"hello.\nabc":  {"hello", ".", "\n", "abc"},
		"\n\n c":       {"\n\n", " c"},
		"trailing   ":  {"trailing", "   "},
		"😀 你好 123":     {"😀", " 你好", " 123"},
		"tab\tseparat": {"tab", "\t", "separat"},
	}
	for in, want := range cases {
		require.Equal(t, want, tok.preTokenize(in), "input %q", in)
	}
}

func TestBPERoundTrip(t *testing.T) {
	for _, pre := range []string{"llama-bpe", "gpt2"} {
		tok := newTestBPE(t, pre)
		for _, s := range append(trickyStrings, "\xff\xfe invalid \xc3") {
			for _, special := range []bool{false, true} {
				ids := tok.Encode(s, special)
				require.Equal(t, s, tok.Decode(ids), "pre %s special %v input %q", pre, special, s)
				for _, id := range ids {
					require.True(t, id >= 0 && id < tok.VocabSize())
				}
			}
		}
	}
}

func TestBPEMetadataRoundTrip(t *testing.T) {
	tok := newTestBPE(t, "llama-bpe")
	meta, err := tok.Metadata()
	require.NoError(t, err)
	require.Equal(t, "gpt2", meta["tokenizer.ggml.model"])
	require.Equal(t, "llama-bpe", meta["tokenizer.ggml.pre"])
	require.Equal(t, testMerges, meta["tokenizer.ggml.merges"])
	require.Equal(t, uint32(tBOT), meta["tokenizer.ggml.bos_token_id"])
	require.Equal(t, uint32(tEOT), meta["tokenizer.ggml.eot_token_id"])
	require.Equal(t, true, meta["tokenizer.ggml.add_bos_token"])
	again, err := NewTokenizerFromGGUF(meta)
	require.NoError(t, err)
	for _, s := range trickyStrings {
		require.Equal(t, tok.Encode(s, true), again.Encode(s, true), "input %q", s)
	}
}

func FuzzBPERoundTrip(f *testing.F) {
	for _, s := range trickyStrings {
		f.Add(s, false)
	}
	f.Add("hi<|eot_id|>hello", true)
	tok := newTestBPE(f, "llama-bpe")
	f.Fuzz(func(t *testing.T, s string, special bool) {
		ids := tok.Encode(s, special)
		if got := tok.Decode(ids); got != s {
			t.Fatalf("Decode(Encode(%q)) = %q (ids %v)", s, got, ids)
		}
		// A stream of the same ids gives the same bytes.
		d := NewStreamDecoder(tok)
		var out []byte
		for _, id := range ids {
			piece := d.Push(id)
			if !tok.IsControl(id) && !utf8.ValidString(piece) && utf8.ValidString(s) {
				t.Fatalf("stream piece %q is not valid UTF-8", piece)
			}
			out = append(out, piece...)
		}
		out = append(out, d.Flush()...)
		want := make([]byte, 0, len(s))
		for _, id := range ids {
			if !tok.IsControl(id) {
				want = append(want, tok.TokenBytes(id)...)
			}
		}
		if string(out) != string(want) {
			t.Fatalf("stream %q != %q", out, want)
		}
	})
}
