//go:build unix

package model

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/internal/fsutil/fifotest"
)

// replaceWithFIFO replaces path (absent or a file) by a FIFO.
func replaceWithFIFO(t *testing.T, path string) {
	t.Helper()
	_ = os.Remove(path)
	require.NoError(t, syscall.Mkfifo(path, 0o644))
}

// requireNotRegular checks err is the one-line error naming fifo and that fifo is still a FIFO.
func requireNotRegular(t *testing.T, err error, fifo string) {
	t.Helper()
	require.Error(t, err)
	require.ErrorContains(t, err, fifo+": not a regular file (it is a named pipe)")
	require.NotContains(t, err.Error(), "\n")
	st, serr := os.Lstat(fifo)
	require.NoError(t, serr)
	require.NotZero(t, st.Mode()&fs.ModeNamedPipe)
}

func TestOpenRefusesFIFOModelFiles(t *testing.T) {
	t.Run("gguf", func(t *testing.T) {
		fifo := filepath.Join(t.TempDir(), "m.gguf")
		replaceWithFIFO(t, fifo)
		requireNotRegular(t, fifotest.Within(t, fifo, 5*time.Second, "opening a model file", func() error { _, err := Open(fifo); return err }), fifo)
		requireNotRegular(t, fifotest.Within(t, fifo, 5*time.Second, "opening a model file", func() error { _, err := OpenGGUF(fifo); return err }), fifo)
	})
	for _, name := range []string{"config.json", "model.safetensors", HFTokenizerFile, HFTokenizerConfigFile} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, WriteSyntheticHF(dir, SynthOptions{Vocab: 300, Dim: 256, Layers: 1, Heads: 4, KVHeads: 2, FFN: 512, Ctx: 64}))
			fifo := filepath.Join(dir, name)
			replaceWithFIFO(t, fifo)
			requireNotRegular(t, fifotest.Within(t, fifo, 5*time.Second, "opening a model file", func() error { _, err := Open(dir); return err }), fifo)
			if name == "model.safetensors" {
				requireNotRegular(t, fifotest.Within(t, fifo, 5*time.Second, "opening a model file", func() error { _, err := Open(fifo); return err }), fifo)
			}
			requireNotRegular(t, fifotest.Within(t, fifo, 5*time.Second, "opening a model file", func() error { return ConvertHF(dir, filepath.Join(t.TempDir(), "x.gguf"), TypeI2_S) }), fifo)
		})
	}
}

func TestWriteRefusesNonRegularTargets(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "out.gguf")
	replaceWithFIFO(t, fifo)
	requireNotRegular(t, WriteSynthetic(fifo, SynthOptions{Layers: 1}), fifo)
	g := &GGUF{Keys: []string{"general.architecture"}, Meta: map[string]any{"general.architecture": "x"}}
	requireNotRegular(t, WriteGGUFFile(fifo, g), fifo)
	err := WriteGGUFFile(dir, g)
	require.ErrorContains(t, err, dir+": not a regular file (it is a directory)")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "only the FIFO: no temporary file left")
}

func TestSynthRefusesAbsurdShapes(t *testing.T) {
	for _, c := range []struct {
		opt    SynthOptions
		option string
		value  int
		reason string
	}{
		{SynthOptions{Dim: 1_000_000_000}, "dim", 1_000_000_000, "projection blk.N.attn_q.weight would have 1000000000000000000 elements"},
		{SynthOptions{FFN: 100_000_000}, "ffn", 100_000_000, "projection blk.N.ffn_gate.weight"},
		{SynthOptions{Layers: 5000}, "layers", 5000, "at most 4096"},
		{SynthOptions{Vocab: 3_000_000}, "vocab", 3_000_000, "at most 2097152"},
		{SynthOptions{Ctx: 1 << 30}, "ctx", 1 << 30, "at most 16777216"},
		{SynthOptions{Dim: 40960, Heads: 32, KVHeads: 8, FFN: 40960, Layers: 100, Type: TypeF16}, "dim", 40960, "over synth's 64.0 GiB limit"},
		{SynthOptions{Vocab: 1 << 21, Dim: 16384, Heads: 128, KVHeads: 8}, "vocab", 1 << 21, "make a model file of about 64.4 GiB, over"},
	} {
		_, err := c.opt.Config()
		var se *SynthSizeError
		require.True(t, errors.As(err, &se), "%+v: %v", c.opt, err)
		require.Equal(t, c.option, se.Option)
		require.Equal(t, c.value, se.Value)
		require.Contains(t, se.Reason, c.reason)
		path := filepath.Join(t.TempDir(), "x.gguf")
		require.ErrorAs(t, WriteSynthetic(path, c.opt), &se)
		_, err = os.Stat(path)
		require.ErrorIs(t, err, fs.ErrNotExist)
	}
	// The 2b4t shapes are well inside the bounds, in every type.
	for _, typ := range []TensorType{TypeI2_S, TypeTQ1_0, TypeTQ2_0, TypeF16} {
		opt, err := SynthPreset("2b4t")
		require.NoError(t, err)
		opt.Type = typ
		_, err = opt.Config()
		require.NoError(t, err)
	}
}
