package bitgpu_test

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu"
	"github.com/bitgpu/bitgpu/model"
)

// Without a requested size the context is min(the model's context length, the default): a file's
// context_length is untrusted, and 2^31-1 used to size the KV cache (an out-of-memory crash).
func TestContextSize(t *testing.T) {
	for _, c := range []struct{ req, def, limit, want int }{
		{0, bitgpu.DefaultContext, math.MaxInt32, 4096}, {0, 512, math.MaxInt32, 512}, {100000, 4096, math.MaxInt32, 100000},
		{0, 4096, 64, 64}, {64, 4096, 64, 64},
	} {
		n, err := bitgpu.ContextSize(c.req, c.def, c.limit)
		require.NoError(t, err)
		require.Equal(t, c.want, n, "%+v", c)
	}
	_, err := bitgpu.ContextSize(65, 4096, 64)
	require.EqualError(t, err, "--ctx 65: exceeds the model's context length 64")
	_, err = bitgpu.ContextSize(-1, 4096, 64)
	require.EqualError(t, err, "--ctx -1: must be positive")
}

// TestOpenOptions: the device, context and head options reach the backend, bad values are
// errors naming the option, a missing file is an error naming it, and a cancelled context
// stops generation and perplexity.
func TestOpenOptions(t *testing.T) {
	_, err := bitgpu.Open("", bitgpu.Options{Device: "tpu"})
	require.EqualError(t, err, `--device "tpu": want auto, gpu, cpu or cpuref`)
	_, err = bitgpu.Open("", bitgpu.Options{LMHead: "q4"})
	require.ErrorContains(t, err, "q4")
	missing := filepath.Join(t.TempDir(), "none.gguf")
	_, err = bitgpu.Open(missing, bitgpu.Options{})
	require.ErrorContains(t, err, missing)

	path := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, model.WriteSynthetic(path, model.SynthOptions{Ctx: 128}))
	for _, dev := range []string{"cpu", "cpuref"} {
		m, err := bitgpu.Open(path, bitgpu.Options{Device: dev, Ctx: 100})
		require.NoError(t, err)
		require.Equal(t, dev, m.Backend())
		require.Equal(t, 100, m.Context())
		res, err := m.Generate(context.Background(), "hello", bitgpu.GenerateOptions{MaxTokens: 5, IgnoreEOS: true}, nil)
		require.NoError(t, err)
		require.Len(t, res.Tokens, 5)

		ctx, cancel := context.WithCancel(context.Background())
		n := 0
		_, err = m.Generate(ctx, "hello", bitgpu.GenerateOptions{MaxTokens: 50, IgnoreEOS: true}, func(string) error {
			if n++; n == 2 {
				cancel()
			}
			return nil
		})
		require.True(t, errors.Is(err, context.Canceled), "%v", err)
		_, err = m.Perplexity(ctx, "hello world, hello world, hello world, hello world", 8, 0)
		require.True(t, errors.Is(err, context.Canceled), "%v", err)
		require.NoError(t, m.Close())
	}
}
