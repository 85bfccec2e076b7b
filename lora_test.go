package bitgpu_test

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu"
	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

func TestParseLoRA(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bitgpu.LoRA
	}{
		{"a.gguf", bitgpu.LoRA{Path: "a.gguf", Scale: 1}},
		{"a.gguf:0.5", bitgpu.LoRA{Path: "a.gguf", Scale: 0.5}},
		{"dir/peft:-2", bitgpu.LoRA{Path: "dir/peft", Scale: -2}},
		{"c:/x/adapter", bitgpu.LoRA{Path: "c:/x/adapter", Scale: 1}}, // not a number after ':'
		{"x:1:0", bitgpu.LoRA{Path: "x:1", Scale: 0}},
	} {
		got, err := bitgpu.ParseLoRA(c.in)
		require.NoError(t, err, c.in)
		require.Equal(t, c.want, got, c.in)
	}
	_, err := bitgpu.ParseLoRA(":0.5")
	require.EqualError(t, err, `--lora ":0.5": want FILE[:SCALE] (a GGUF LoRA adapter or a PEFT directory)`)
	_, err = bitgpu.ParseLoRA("a.gguf:inf")
	require.EqualError(t, err, `--lora "a.gguf:inf": scale inf must be a finite number`)
	_, err = bitgpu.ParseLoRA("a.gguf:1e40") // beyond float32
	require.EqualError(t, err, `--lora "a.gguf:1e40": scale 1e40 must be a finite number`)
}

// TestSequencesStartAtLoadScales: a sequence made by NewSequence starts at the adapters'
// load-time scales whatever the Model's backend was set to, on the CPU backends.
func TestSequencesStartAtLoadScales(t *testing.T) {
	path := writeAdapter(t, 4, 9, nil)
	for _, dev := range []string{"cpu", "cpuref"} {
		m, err := bitgpu.Open("", bitgpu.Options{Device: dev, LoRA: []bitgpu.LoRA{{Path: path, Scale: 1}}})
		require.NoError(t, err)
		_, b := m.Internals()
		want, err := b.Prefill([]int{1, 2, 3}, false)
		require.NoError(t, err)
		require.NoError(t, b.(runtime.LoRABackend).SetLoRAScales([]float32{0}))
		seq, err := m.NewSequence()
		require.NoError(t, err)
		got, err := seq.Prefill([]int{1, 2, 3}, false)
		require.NoError(t, err)
		require.Equal(t, want, got, dev)
		require.NoError(t, seq.Close())
		require.NoError(t, m.Close())
	}
}

// writeAdapter writes a random adapter for the built-in model as a GGUF LoRA file.
func writeAdapter(t *testing.T, rank int, seed uint64, targets []string) string {
	t.Helper()
	m, err := assets.Open()
	require.NoError(t, err)
	defer m.Close()
	l, err := model.SynthLoRA(m.Config, rank, float32(2*rank), 1, seed, targets)
	require.NoError(t, err)
	require.NoError(t, l.Check(m))
	path := filepath.Join(t.TempDir(), "adapter.gguf")
	require.NoError(t, model.WriteLoRAGGUF(path, l))
	return path
}

// TestOpenWithLoRA: an adapter given to Open changes the generated tokens on every CPU backend
// and the same way on each; at scale 0 the output is the base model's; a sequence's scales
// change per request; an adapter that does not fit is an error naming its file.
func TestOpenWithLoRA(t *testing.T) {
	path := writeAdapter(t, 8, 1, nil)
	gen := func(m *bitgpu.Model) []int {
		res, err := m.Generate(context.Background(), "The function", bitgpu.GenerateOptions{MaxTokens: 12, IgnoreEOS: true}, nil)
		require.NoError(t, err)
		return res.Tokens
	}
	open := func(dev string, loras ...bitgpu.LoRA) *bitgpu.Model {
		m, err := bitgpu.Open("", bitgpu.Options{Device: dev, LoRA: loras})
		require.NoError(t, err)
		t.Cleanup(func() { m.Close() })
		return m
	}
	base := gen(open("cpuref"))
	var adapted []int
	for _, dev := range []string{"cpuref", "cpu"} {
		m := open(dev, bitgpu.LoRA{Path: path, Scale: 1})
		require.Len(t, m.Adapters(), 1)
		got := gen(m)
		require.NotEqual(t, base, got, dev)
		if adapted == nil {
			adapted = got
		}
		require.Equal(t, adapted, got, dev)
		require.Equal(t, base, gen(open(dev, bitgpu.LoRA{Path: path, Scale: 0})), dev)
	}

	other := filepath.Join(t.TempDir(), "other.gguf")
	require.NoError(t, model.WriteSynthetic(other, model.SynthOptions{Dim: 128, Ctx: 64}))
	_, err := bitgpu.Open(other, bitgpu.Options{Device: "cpu", LoRA: []bitgpu.LoRA{{Path: path, Scale: 1}}})
	require.ErrorContains(t, err, path)
	_, err = bitgpu.Open("", bitgpu.Options{Device: "cpu", LoRA: []bitgpu.LoRA{{Path: filepath.Join(t.TempDir(), "none.gguf"), Scale: 1}}})
	require.ErrorContains(t, err, "none.gguf")
	_, err = bitgpu.Open("", bitgpu.Options{Device: "cpu", LoRA: []bitgpu.LoRA{{Path: path, Scale: float32(math.NaN())}}})
	require.ErrorContains(t, err, "must be finite")
}
