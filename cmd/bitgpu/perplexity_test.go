package main

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// pplText is English-like text for the perplexity tests.
const pplText = "the cat sat on the mat and the dog ran in the park while the sun was out, and then it rained on the town"

func TestPerplexityLastLineMatchesDirectComputation(t *testing.T) {
	path := synthFile(t)
	text := filepath.Join(t.TempDir(), "text.txt")
	require.NoError(t, os.WriteFile(text, []byte(pplText), 0o644))

	out, errOut, code := runCLI(t, nil, "perplexity", "-m", path, "-f", text, "--ctx", "8", "--device", "cpu")
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	last := lines[len(lines)-1]
	require.Regexp(t, `^ppl: [0-9]+\.[0-9]{4}$`, last)
	got, err := strconv.ParseFloat(strings.TrimPrefix(last, "ppl: "), 64)
	require.NoError(t, err)

	// The definition computed here with cpuref: tokens without BOS, window w = tokens
	// [8w, 8w+8], a fresh cache per window, float64 log-softmax.
	m, b := openCPU(t, path)
	tokens := m.Tokenizer.Encode(pplText, false)
	k := (len(tokens) - 1) / 8
	require.GreaterOrEqual(t, k, 2)
	require.Len(t, lines, k+1, "one line per window, then ppl")
	v := m.Config.VocabSize
	var sum float64
	for w := range k {
		b.Reset()
		logits, err := b.Prefill(tokens[8*w:8*w+8], true)
		require.NoError(t, err)
		for i := range 8 {
			row := logits[i*v : (i+1)*v]
			var z float64
			for _, l := range row {
				z += math.Exp(float64(l))
			}
			sum += math.Log(z) - float64(row[tokens[8*w+i+1]])
		}
	}
	want := math.Exp(sum / float64(8*k))
	// The CLI prints 4 decimals (at most 0.5e-4 off); the two float64 computations differ by
	// rounding only (~1e-13 relative).
	require.InDelta(t, want, got, 0.5e-4+want*1e-12)
	require.Contains(t, errOut, strconv.Itoa(k)+" windows of 8 predictions")

	// --chunks takes the first windows only.
	out, errOut, code = runCLI(t, nil, "perplexity", "-m", path, "-f", text, "--ctx", "8", "--chunks", "1", "--device", "cpu")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, 2, strings.Count(out, "\n"))
}

func TestPerplexityErrors(t *testing.T) {
	path := synthFile(t)
	text := filepath.Join(t.TempDir(), "text.txt")
	require.NoError(t, os.WriteFile(text, []byte(pplText), 0o644))
	short := filepath.Join(t.TempDir(), "short.txt")
	require.NoError(t, os.WriteFile(short, []byte("the cat"), 0o644))
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"-m", path, "-f", filepath.Join(t.TempDir(), "none.txt")}, []string{"none.txt"}},
		{[]string{"-m", path}, []string{`"file"`}},
		{[]string{"-m", path, "-f", short, "--device", "cpu"}, []string{"short.txt", "too short for one window of 64 predictions"}},
		{[]string{"-m", path, "-f", text, "--ctx", "8", "--chunks", "99", "--device", "cpu"}, []string{"--chunks 99:", "text.txt"}},
		{[]string{"-m", path, "-f", text, "--ctx", "-3"}, []string{"--ctx -3:"}},
		{[]string{"-m", path, "-f", text, "--device", "x"}, []string{`--device "x"`}},
	} {
		out, errOut, code := runCLI(t, nil, append([]string{"perplexity"}, c.args...)...)
		requireOneErrorLine(t, out, errOut, code, c.want...)
	}
}
