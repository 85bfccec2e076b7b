//go:build cgo

package httpapi_test

import (
	"fmt"
	"testing"

	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/gpu/gputest"
)

// startGPU is startSetup on the Vulkan device of the test (skipped without one unless
// BITGPU_REQUIRE_GPU=1, as gputest.Open): paged sequences sharing one KV cache.
func startGPU(t *testing.T, o setup) *testServer {
	t.Helper()
	gputest.Open(t).Close() // skips or fails without a device
	o.device = "gpu"
	return startSetup(t, o)
}

// TestGPUPagedBatchInvariance: on the GPU, four paged sequences decoding in batched steps (the
// new requests' prompts prefilled inside the same passes) give
// every request — greedy and seeded, sixteen at once from real OpenAI clients — exactly the
// text the CPU backend gives it alone on one slot (the bit-exact contract makes the backends'
// logits equal, so sampling picks the same tokens), and the greedy ones equal `bitgpu generate`.
func TestGPUPagedBatchInvariance(t *testing.T) {
	runs := invarianceRuns(t)
	ts := startGPU(t, setup{parallel: 4, ctx: 256, queue: 64, kvSize: 4 * 256})
	requireSameTexts(t, ts, runs)
	ts.waitIdle(t)
	st := ts.eng.Stats()
	require.Positive(t, st.BatchedSteps, "paged sequences decode in batched steps")
	require.Positive(t, st.BatchedChunks, "prompts prefill inside batched passes")
	require.Zero(t, st.KVBlocksUsed, "every block back in the pool")
	require.Zero(t, st.KVBlocksReserved)
}

// TestGPULoad: 32 clients × 64 tokens (half streamed, sampled) against 8 paged GPU sequences whose
// shared KV cache holds only 5 requests' reservations at once, so requests also queue for blocks:
// every request succeeds with all its tokens, and at the end no block is used or reserved and
// /metrics shows the whole pool free.
func TestGPULoad(t *testing.T) {
	const clients, tokens = 32, 64
	// A request reserves ceil((prompt + 64) / 32) = 3 blocks; the pool of 16 holds 5 of them.
	ts := startGPU(t, setup{parallel: 8, ctx: 256, queue: 64, kvSize: 16 * 32})
	res := runLoad(t, ts, clients, tokens, true, option.WithJSONSet("ignore_eos", true))
	require.Empty(t, res.errs)
	ts.waitIdle(t)
	st := ts.eng.Stats()
	require.Zero(t, st.KVBlocksUsed)
	require.Zero(t, st.KVBlocksReserved)
	require.Equal(t, 16, st.KVBlocksTotal)
	require.LessOrEqual(t, res.maxRunning, 5, "at most 5 reservations fit the pool")
	_, _, metrics := getURL(t, ts.srv.URL+"/metrics", "")
	require.Contains(t, metrics, "bitgpu_kv_blocks_used 0\n")
	require.Contains(t, metrics, "bitgpu_kv_blocks_free 16\n")
	require.Contains(t, metrics, fmt.Sprintf("bitgpu_decode_steps_total %d\n", st.DecodeTokens))
	t.Logf("%d clients × %d tokens: 0 errors, %d tokens, %d decode steps, %d of them in %d batched steps (%.2f a step), %d prompt chunks in batched passes",
		clients, tokens, res.generated, st.DecodeTokens, st.BatchedTokens, st.BatchedSteps, float64(st.BatchedTokens)/float64(max(st.BatchedSteps, 1)), st.BatchedChunks)
}
