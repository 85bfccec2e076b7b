package cpuref

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// A context the memory cannot hold is refused before anything is allocated, naming the bytes
// and the --ctx that fits (context_length = 2^31-1 used to end in a Go out-of-memory crash).
func TestNewRefusesKVCacheBeyondMemory(t *testing.T) {
	m := synthModel(t, synthOptions{typ: model.TypeI2_S, wScale: 0.0625, seed: 7})
	m.Config.ContextLength = math.MaxInt32
	// 2 layers × 128 KV values × 4 bytes = 1 KiB a token: 2^31-1 tokens need 2 TiB.
	_, err := New(m, 0)
	require.ErrorContains(t, err, "cpuref: a KV cache of 2147483647 tokens needs 2199023254528 bytes (2048.00 GiB")
	require.ErrorContains(t, err, "try --ctx")

	saved := memAvailable
	defer func() { memAvailable = saved }()
	memAvailable = func() uint64 { return 1 << 20 }
	_, err = New(m, 2048)
	require.EqualError(t, err, "cpuref: a KV cache of 2048 tokens needs 2097152 bytes (2.0 MiB: 2 layers × 128 KV values × 2 bytes × keys and values a token) but the system has 1.0 MiB available; try --ctx 1024 or less")
	b, err := New(m, 1024)
	require.NoError(t, err)
	require.NoError(t, b.Close())

	memAvailable = func() uint64 { return 0 } // unknown: only addressability is checked
	_, err = New(m, math.MaxInt)
	require.EqualError(t, err, "cpuref: a KV cache of 9223372036854775807 tokens (1024 bytes a token) is beyond any memory; try a smaller --ctx")
}

func TestKVCacheBytes(t *testing.T) {
	cfg := model.Config{Layers: 30, KVHeads: 5, HeadDim: 128}
	require.Equal(t, uint64(30*4096*640*4), KVCacheBytes(cfg, 4096))
	require.Equal(t, uint64(math.MaxUint64), KVCacheBytes(cfg, math.MaxInt))
}
