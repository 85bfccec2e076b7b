package model

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCatchFaultOnTruncatedMapping truncates a memory-mapped GGUF under its reader: reading a
// page past the new end raises SIGBUS, which CatchFault turns into an error naming the file.
func TestCatchFaultOnTruncatedMapping(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, WriteSynthetic(path, SynthOptions{}))
	g, err := OpenGGUF(path)
	require.NoError(t, err)
	defer g.Close()
	emb := g.Tensor("token_embd.weight")
	require.NotNil(t, emb)
	require.NoError(t, os.Truncate(path, 4096))

	var sum byte
	err = CatchFault(func() error {
		for _, b := range emb.Data {
			sum += b
		}
		return nil
	})
	require.Error(t, err)
	require.True(t, errors.Is(err, ErrFileChanged), "%v", err)
	require.Contains(t, err.Error(), path)

	// Other panics pass through untouched.
	require.PanicsWithValue(t, "boom", func() { _ = CatchFault(func() error { panic("boom") }) })
	// And errors from fn come back as they are.
	want := errors.New("plain")
	require.Equal(t, want, CatchFault(func() error { return want }))
}
