//go:build cgo

package runtime

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/model"
)

// TestBenchE2ESpread: every point keeps the spread behind its latencies — the fastest and
// slowest prefill run around their median and decode step around their mean — which the
// end-to-end plots draw as error bars.
func TestBenchE2ESpread(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, nil)
	res, err := BenchE2E(gputest.Open(t), m, []int{8, 16}, 4, 0, cpuref.DefaultLMHead)
	require.NoError(t, err)
	require.Len(t, res.Points, 2)
	for _, p := range res.Points {
		require.Equal(t, 3, p.PrefillRuns, "a fast prefill is timed e2ePrefillRuns times")
		require.Greater(t, p.PrefillMSPerTokenMin, 0.0)
		require.LessOrEqual(t, p.PrefillMSPerTokenMin, p.PrefillMSPerToken)
		require.GreaterOrEqual(t, p.PrefillMSPerTokenMax, p.PrefillMSPerToken)
		require.Less(t, p.PrefillMSPerTokenMin, p.PrefillMSPerTokenMax, "three runs never take the same nanoseconds")
		require.Greater(t, p.DecodeMSPerTokenMin, 0.0)
		require.LessOrEqual(t, p.DecodeMSPerTokenMin, p.DecodeMSPerToken)
		require.GreaterOrEqual(t, p.DecodeMSPerTokenMax, p.DecodeMSPerToken)
	}
}
