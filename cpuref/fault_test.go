package cpuref

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// TestDecodeOnTruncatedFile: a model file truncated in place while the backend uses it (the
// weights are memory-mapped) gives one error naming the file, not a SIGBUS crash — on the calling
// goroutine and on the parallel row workers alike.
func TestDecodeOnTruncatedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, model.WriteSynthetic(path, model.SynthOptions{}))
	m, err := model.Open(path)
	require.NoError(t, err)
	defer m.Close()
	b, err := New(m, 64)
	require.NoError(t, err)
	defer b.Close()
	_, err = b.Decode(1)
	require.NoError(t, err)

	require.NoError(t, os.Truncate(path, 4096))
	_, err = b.Decode(2)
	require.Error(t, err)
	require.True(t, errors.Is(err, model.ErrFileChanged), "%v", err)
	require.Contains(t, err.Error(), path)
	require.Equal(t, 1, b.Pos(), "a failed step leaves the position where it was")
}
