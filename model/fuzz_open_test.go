package model_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// fuzzSynth is the smallest synthetic model the fuzz seeds start from (about 60 KB).
var fuzzSynth = model.SynthOptions{Vocab: 259, Dim: 32, Layers: 1, Heads: 2, KVHeads: 1, FFN: 64, Ctx: 16, Seed: 3}

// fuzzSeeds returns a valid tiny GGUF and variants of it with one key or value made hostile.
func fuzzSeeds(f *testing.F) [][]byte {
	path := filepath.Join(f.TempDir(), "seed.gguf")
	require.NoError(f, model.WriteSynthetic(path, fuzzSynth))
	valid, err := os.ReadFile(path)
	require.NoError(f, err)
	seeds := [][]byte{valid}
	edit := func(fn func(g *model.GGUF)) {
		g, err := model.ParseGGUF("seed", append([]byte(nil), valid...))
		require.NoError(f, err)
		fn(g)
		var b bytes.Buffer
		require.NoError(f, model.WriteGGUF(&b, g))
		seeds = append(seeds, b.Bytes())
	}
	const a = "bitnet-b1.58."
	for _, kv := range []struct {
		key string
		v   any
	}{
		{a + "block_count", uint32(1000000)}, {a + "block_count", uint32(math.MaxInt32)},
		{a + "context_length", uint32(math.MaxInt32)}, {a + "embedding_length", uint32(math.MaxInt32)},
		{a + "feed_forward_length", uint32(1 << 30)}, {a + "rope.dimension_count", uint32(0)},
		{a + "attention.head_count", uint32(1 << 20)}, {a + "vocab_size", uint32(math.MaxInt32)},
	} {
		edit(func(g *model.GGUF) { g.Meta[kv.key] = kv.v })
	}
	edit(func(g *model.GGUF) {
		for _, t := range g.Tensors {
			if t.Name == "output_norm.weight" {
				t.Data = binary.LittleEndian.AppendUint32(append([]byte(nil), t.Data[4:]...), 0x7F800000)
			}
		}
	})
	return seeds
}

// FuzzOpenGGUF runs whole files through model.Open — parser, ConfigFromGGUF's bounds, tensor
// validation, the finiteness check, the tokenizer — and, when a file opens, the CPU backend with
// a small context and one token. No input may panic or allocate from an unchecked count; a file
// that opens must pass Config.Check and CheckFinite again.
func FuzzOpenGGUF(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.gguf")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := model.Open(path)
		if err != nil {
			return
		}
		defer m.Close()
		if err := m.Config.Check(); err != nil {
			t.Fatalf("opened with an inconsistent config: %v", err)
		}
		if err := model.CheckFinite(m.Tensors); err != nil {
			t.Fatalf("opened with non-finite weights: %v", err)
		}
		b, err := cpuref.New(m, min(m.Config.ContextLength, 8))
		if err != nil {
			return
		}
		defer b.Close()
		_, _ = b.Prefill([]int{0}, false)
	})
}
