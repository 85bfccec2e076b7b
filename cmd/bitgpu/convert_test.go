package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

func TestConvertCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hf")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, model.WriteSyntheticHF(dir, model.SynthOptions{Vocab: 300, Dim: 256, Layers: 1, Heads: 4, KVHeads: 2, FFN: 512, Ctx: 64}))
	out := filepath.Join(t.TempDir(), "m.gguf")

	stdout, stderr, code := runCLI(t, nil, "convert", dir, "-o", out, "--type", "tq2_0")
	require.Equal(t, 0, code, stderr)
	require.Empty(t, stdout)
	require.Contains(t, stderr, "wrote "+out)
	require.Contains(t, stderr, "bitnet-b1.58")
	require.Contains(t, stderr, "TQ2_0 projections")
	m, err := model.Open(out)
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, model.TypeTQ2_0, m.Tensors["blk.0.ffn_down.weight"].Type)
	require.Equal(t, 512, m.Config.FFNDim)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"convert", dir, "-o", out, "--type", "q4_0"}, `bitgpu: --type: tensor type "q4_0": want i2_s, tq2_0 or tq1_0`},
		{[]string{"convert", dir}, `bitgpu: required flag(s) "output" not set`},
		{[]string{"convert", out, "-o", out + "2"}, "bitgpu: " + out + ": not a directory"},
		{[]string{"convert", filepath.Join(dir, "nope"), "-o", out}, "bitgpu: stat " + filepath.Join(dir, "nope")},
	} {
		stdout, stderr, code := runCLI(t, nil, c.args...)
		require.Equal(t, 1, code, c.args)
		require.Empty(t, stdout)
		require.Equal(t, 1, strings.Count(stderr, "\n"), "one error line: %q", stderr)
		require.True(t, strings.HasPrefix(stderr, c.want), "%v: %q", c.args, stderr)
	}
}
