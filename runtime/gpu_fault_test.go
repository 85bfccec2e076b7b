//go:build cgo

package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/model"
)

// TestGPUOnTruncatedFile: a model file truncated in place while in use (the weights and the host
// embedding table are memory-mapped) gives an error naming the file instead of a SIGBUS crash,
// both while the weights upload and when a decode step gathers an embedding row on the host (a
// Q4_K table). An F16 table is gathered on the device: decoding reads nothing of the file then.
func TestGPUOnTruncatedFile(t *testing.T) {
	dev := gputest.Open(t)
	dir := t.TempDir()
	open := func(name string) (*model.Model, string) {
		path := filepath.Join(dir, name)
		require.NoError(t, model.WriteSynthetic(path, model.SynthOptions{}))
		m, err := model.Open(path)
		require.NoError(t, err)
		t.Cleanup(func() { m.Close() })
		return m, path
	}

	m, path := open("upload.gguf")
	require.NoError(t, os.Truncate(path, 4096))
	_, err := NewGPU(dev, m, GPUOptions{Ctx: 64})
	require.True(t, errors.Is(err, model.ErrFileChanged), "%v", err)
	require.Contains(t, err.Error(), path)

	m, path = open("decode.gguf")
	g, err := NewGPU(dev, m, GPUOptions{Ctx: 64})
	require.NoError(t, err)
	defer g.Close()
	_, err = g.Decode(1)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(path, 4096))
	_, err = g.Decode(2)
	require.NoError(t, err, "the F16 table is on the device")

	km := kquantModel(t)
	kg, err := NewGPU(dev, km, GPUOptions{Ctx: 64})
	require.NoError(t, err)
	defer kg.Close()
	require.Nil(t, kg.embd, "Q4_K rows are gathered on the host")
	_, err = kg.Decode(1)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(km.Path, 4096))
	_, err = kg.Decode(2)
	require.True(t, errors.Is(err, model.ErrFileChanged), "%v", err)
	require.Contains(t, err.Error(), km.Path)
}
