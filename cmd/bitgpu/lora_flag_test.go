package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu"
	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/model"
)

// TestLoRAFlag: `generate --lora FILE:SCALE` prints exactly the library's text with that
// adapter (and not the base model's), `--lora` repeats, perplexity takes it too, and a
// missing or misfitting adapter is one error line naming it.
func TestLoRAFlag(t *testing.T) {
	m, err := assets.Open()
	require.NoError(t, err)
	l, err := model.SynthLoRA(m.Config, 8, 16, 1, 3, nil)
	require.NoError(t, err)
	require.NoError(t, l.Check(m))
	m.Close()
	path := filepath.Join(t.TempDir(), "a.gguf")
	require.NoError(t, model.WriteLoRAGGUF(path, l))

	lib := func(loras ...bitgpu.LoRA) string {
		bm, err := bitgpu.Open("", bitgpu.Options{Device: "cpu", LoRA: loras})
		require.NoError(t, err)
		defer bm.Close()
		res, err := bm.Generate(context.Background(), "The list", bitgpu.GenerateOptions{MaxTokens: 10, IgnoreEOS: true}, nil)
		require.NoError(t, err)
		return res.Text
	}
	gen := func(args ...string) string {
		out, errOut, code := runCLI(t, nil, append([]string{"generate", "-p", "The list", "-n", "10", "--temp", "0", "--ignore-eos", "--device", "cpu"}, args...)...)
		require.Equal(t, 0, code, errOut)
		return out
	}
	base := gen()
	require.Equal(t, lib(), base)
	half := gen("--lora", path+":0.5")
	require.Equal(t, lib(bitgpu.LoRA{Path: path, Scale: 0.5}), half)
	require.NotEqual(t, base, half)
	require.Equal(t, lib(bitgpu.LoRA{Path: path, Scale: 0.5}, bitgpu.LoRA{Path: path, Scale: 1}), gen("--lora", path+":0.5", "--lora", path))
	require.Equal(t, base, gen("--lora", path+":0"))

	text := filepath.Join(t.TempDir(), "t.txt")
	require.NoError(t, os.WriteFile(text, []byte("The Python interpreter reads a program and runs it. A list holds items in order. "), 0o644))
	ppl := func(args ...string) string {
		out, errOut, code := runCLI(t, nil, append([]string{"perplexity", "-f", text, "--ctx", "16", "--device", "cpu"}, args...)...)
		require.Equal(t, 0, code, errOut)
		return out
	}
	require.NotEqual(t, ppl(), ppl("--lora", path))

	missing := filepath.Join(t.TempDir(), "none.gguf")
	out, errOut, code := runCLI(t, nil, "generate", "-p", "x", "-n", "1", "--device", "cpu", "--lora", missing)
	requireOneErrorLine(t, out, errOut, code, missing)
	other := filepath.Join(t.TempDir(), "other.gguf")
	require.NoError(t, model.WriteSynthetic(other, model.SynthOptions{Dim: 128, Ctx: 64}))
	out, errOut, code = runCLI(t, nil, "generate", "-m", other, "-p", "x", "-n", "1", "--device", "cpu", "--lora", path)
	requireOneErrorLine(t, out, errOut, code, path)
	out, errOut, code = runCLI(t, nil, "generate", "-p", "x", "-n", "1", "--lora", path+":nan")
	requireOneErrorLine(t, out, errOut, code, "--lora", "finite")
}
