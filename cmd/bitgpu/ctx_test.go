package main

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// Without --ctx the context is min(the model's context length, 4096): a file's context_length is
// untrusted, and 2^31-1 used to size the KV cache (an out-of-memory crash on the CPU backend).
func TestContextSizeDefault(t *testing.T) {
	m := &model.Model{Config: model.Config{ContextLength: math.MaxInt32}}
	for _, c := range []struct{ flag, def, want int }{
		{0, 0, 4096}, {0, 512, 512}, {100000, 0, 100000},
	} {
		n, err := contextSize(c.flag, c.def, m)
		require.NoError(t, err)
		require.Equal(t, c.want, n)
	}
	m.Config.ContextLength = 64
	n, err := contextSize(0, 0, m)
	require.NoError(t, err)
	require.Equal(t, 64, n)
}

// generate on a file declaring a 2^31-1 token context runs with the default context and says
// so with -v.
func TestGenerateHugeContextLength(t *testing.T) {
	path := synthFile(t)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	g, err := model.ParseGGUF(path, data)
	require.NoError(t, err)
	g.Meta["bitnet-b1.58.context_length"] = uint32(math.MaxInt32)
	huge := filepath.Join(t.TempDir(), "huge-ctx.gguf")
	require.NoError(t, model.WriteGGUFFile(huge, g))
	out, errOut, code := bitgpu(t, nil, "generate", "-m", huge, "-p", "hello", "-n", "3", "--temp", "0", "--device", "cpu", "-v")
	require.Equal(t, 0, code, errOut)
	require.NotEmpty(t, out)
	require.Contains(t, errOut, "bitgpu: context 4096 tokens (--ctx; the model's context length is 2147483647)")
}
