package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSynthInspectTokenize runs `bitgpu synth`, `inspect` and `tokenize` on a one-layer model.
func TestSynthInspectTokenize(t *testing.T) {
	var out bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetErr(&out)
	defer rootCmd.SetOut(nil)
	defer rootCmd.SetErr(nil)

	path := filepath.Join(t.TempDir(), "m.gguf")
	require.Equal(t, 0, run([]string{"synth", "-o", path, "--layers", "1", "--seed", "5"}))
	require.Contains(t, out.String(), "13 tensors (I2_S weights, vocab 300, dim 256, 1 layers)")

	out.Reset()
	require.Equal(t, 0, run([]string{"inspect", path}))
	text := out.String()
	for _, want := range []string{
		"arch:        bitnet-b1.58",
		"heads:       4 (kv heads 2, head dim 64)",
		"tokenizer:   gpt2 (pre llama-bpe), 300 tokens, 41 merges",
		`eot:         299 "<|eot_id|>"`,
		"13 tensors, ",
	} {
		require.Contains(t, text, want)
	}
	// 256 x 256 trits / 4 + 32 bytes; the F16 embedding is 256 x 300 x 2 bytes.
	require.Regexp(t, `blk\.0\.attn_q\.weight +I2_S +\[256 256\] +16416\n`, text)
	require.Regexp(t, `token_embd\.weight +F16 +\[256 300\] +153600\n`, text)

	out.Reset()
	require.Equal(t, 0, run([]string{"tokenize", "-m", path, "hello world<|eot_id|>"}))
	require.Equal(t, "257 285 111 294 299\n", out.String())

	out.Reset()
	require.Equal(t, 1, run([]string{"synth", "-o", path, "--type", "q4"}))
	require.Equal(t, 1, run([]string{"inspect", filepath.Join(t.TempDir(), "none.gguf")}))
	require.False(t, strings.Contains(out.String(), "panic"))
}
