package runtime

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// requireSameBits requires got to hold want's float32 bits, naming the first row and logit that
// differ.
func requireSameBits(t *testing.T, want, got []float32, vocab int, what string) {
	t.Helper()
	require.Equal(t, len(want), len(got), what)
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			t.Fatalf("%s: row %d logit %d: %v, want %v", what, i/vocab, i%vocab, got[i], want[i])
		}
	}
}

// requireChunkedPrefillExact prefills tokens into b once (all logits), then again from an empty
// cache in the chunks of each split (lengths summing to len(tokens)) and through
// prefillReporting with a progress bar, and requires the same logits bit for bit and the same
// cache (the next decode step's logits equal too). This is the README's contract that
// prefill-then-prefill equals one prefill, on which a prefill that reports progress relies.
func requireChunkedPrefillExact(t *testing.T, b Backend, tokens []int, splits [][]int) {
	t.Helper()
	vocab := b.Config().VocabSize
	b.Reset()
	want, err := b.Prefill(tokens, true)
	require.NoError(t, err)
	want = append([]float32(nil), want...)
	wantNext, err := b.Decode(tokens[0])
	require.NoError(t, err)
	wantNext = append([]float32(nil), wantNext...)
	check := func(what string, got []float32) {
		requireSameBits(t, want, got, vocab, what)
		next, err := b.Decode(tokens[0])
		require.NoError(t, err)
		requireSameBits(t, wantNext, next, vocab, what+": the decode step after it")
		require.Equal(t, len(tokens)+1, b.Pos())
	}
	for _, split := range splits {
		b.Reset()
		var got []float32
		lo := 0
		for _, n := range split {
			l, err := b.Prefill(tokens[lo:lo+n], true)
			require.NoError(t, err)
			got = append(got, l...)
			lo += n
		}
		require.Equal(t, len(tokens), lo, "split %v", split)
		check(fmt.Sprintf("prefill in chunks %v", split), got)
	}
	b.Reset()
	var bar bytes.Buffer
	got, err := prefillReporting(b, tokens, true, newTokenProgress(&bar, 0, "prefill", len(tokens)))
	require.NoError(t, err)
	check("prefillReporting", got)
	require.Contains(t, bar.String(), "prefill", "more than one chunk, shown from the start")
	b.Reset()
	last, err := prefillReporting(b, tokens, false, newTokenProgress(&bar, 0, "prefill", len(tokens)))
	require.NoError(t, err)
	requireSameBits(t, want[len(want)-vocab:], last, vocab, "prefillReporting, last logits")
}

// TestChunkedPrefillEqualsOnePrefill checks the contract on the CPU reference backend.
func TestChunkedPrefillEqualsOnePrefill(t *testing.T) {
	m := openSynth(t)
	b := newCPU(t, m, 64)
	tokens := make([]int, 60)
	for i := range tokens {
		tokens[i] = (i*37 + 11) % m.Config.VocabSize
	}
	requireChunkedPrefillExact(t, b, tokens, [][]int{{1, 59}, {8, 8, 44}, {31, 29}, {7, 1, 13, 39}})
}

// TestGenerateProgress: with a Progress writer Generate draws a bar of the prompt tokens when the
// prefill is long enough (ProgressAfter 0: any prefill of more than one chunk) and none when it
// is shorter than ProgressAfter; either way it generates the tokens it generates without one.
func TestGenerateProgress(t *testing.T) {
	m := openSynth(t)
	prompt := make([]int, 50)
	for i := range prompt {
		prompt[i] = (i*7 + 3) % 297
	}
	run := func(w *bytes.Buffer, after time.Duration) GenerateStats {
		b := newCPU(t, m, 64)
		opts := GenerateOptions{MaxTokens: 8, IgnoreEOS: true, ProgressAfter: after}
		if w != nil {
			opts.Progress = w
		}
		st, err := Generate(b, m.Tokenizer, prompt, opts)
		require.NoError(t, err)
		return st
	}
	want := run(nil, 0)
	var shown, quiet bytes.Buffer
	require.Equal(t, want.Tokens, run(&shown, 0).Tokens)
	require.Contains(t, shown.String(), "prefill")
	require.Contains(t, shown.String(), "/50", "counts prompt tokens")
	require.Equal(t, want.Tokens, run(&quiet, time.Hour).Tokens)
	require.Empty(t, quiet.String(), "a prefill shorter than ProgressAfter shows no bar")
}

// TestPerplexityProgressBar: PerplexityWith shows a bar of the tokens of all windows and gives
// the result Perplexity gives.
func TestPerplexityProgressBar(t *testing.T) {
	m := openSynth(t)
	tokens := m.Tokenizer.Encode(strings.Repeat("the cat sat on the mat and then the dog ran to the park. ", 4), false)
	const n = 32
	want, err := Perplexity(newCPU(t, m, n), tokens, n, 2)
	require.NoError(t, err)
	var bar bytes.Buffer
	got, err := PerplexityWith(newCPU(t, m, n), tokens, n, PerplexityOptions{Chunks: 2, Progress: &bar})
	require.NoError(t, err)
	require.Equal(t, want.WindowNLL, got.WindowNLL)
	require.Contains(t, bar.String(), "perplexity")
	require.Contains(t, bar.String(), "/64", "counts the tokens of both windows")
}
