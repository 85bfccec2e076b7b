package main

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

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
	out, errOut, code := runCLI(t, nil, "generate", "-m", huge, "-p", "hello", "-n", "3", "--temp", "0", "--device", "cpu", "-v")
	require.Equal(t, 0, code, errOut)
	require.NotEmpty(t, out)
	require.Contains(t, errOut, "bitgpu: context 4096 tokens (--ctx; the model's context length is 2147483647)")
}
