//go:build cgo

package runtime

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// The refusal says what does not fit: the weights alone (no --ctx helps), or the KV cache (with
// the largest --ctx that fits). It used to suggest a smaller --ctx in every case. (The f16 LM
// head, named explicitly, keeps the 2B4T weights above 1 GiB.)
func TestPlanRefusal(t *testing.T) {
	opt, err := model.SynthPreset("2b4t")
	require.NoError(t, err)
	cfg, err := opt.Config()
	require.NoError(t, err)
	plan := PlanMemoryHead(cfg, 4096, false, cpuref.LMHeadF16)

	err = planRefusal("m.gguf", "dev", cfg, 4096, false, cpuref.LMHeadF16, plan, plan.Weights/2)
	require.ErrorContains(t, err, "m.gguf does not fit on dev: the weights alone need 1.")
	require.ErrorContains(t, err, "--ctx cannot help")
	require.NotContains(t, err.Error(), "try --ctx")

	min1 := PlanMemoryHead(cfg, 1, false, cpuref.LMHeadF16)
	err = planRefusal("m.gguf", "dev", cfg, 4096, false, cpuref.LMHeadF16, plan, min1.Total()-1)
	require.ErrorContains(t, err, "the weights and scratch need")
	require.ErrorContains(t, err, "even at --ctx 1")

	heap := PlanMemoryHead(cfg, 1000, false, cpuref.LMHeadF16).Total()
	err = planRefusal("m.gguf", "dev", cfg, 4096, false, cpuref.LMHeadF16, plan, heap)
	require.ErrorContains(t, err, "m.gguf needs ")
	require.ErrorContains(t, err, "but dev's largest heap has ")
	require.ErrorContains(t, err, "; try --ctx 1000 or less")
}

// A NaN weight scale is named as such, not as "block scales differ" (NaN != NaN).
func TestRepackTernaryRejectsNonFiniteScale(t *testing.T) {
	data, err := model.EncodeTQ2_0(make([]int8, 512), []float32{float32(math.NaN()), float32(math.NaN())})
	require.NoError(t, err)
	m, err := model.NewTernaryMatrix(&model.Tensor{Name: "blk.0.ffn_up.weight", Type: model.TypeTQ2_0, Shape: []uint64{256, 2}, Data: data})
	require.NoError(t, err)
	_, _, err = RepackTernary(m)
	require.EqualError(t, err, "tensor blk.0.ffn_up.weight: the weight scale of row 0 block 0 is NaN; weights must be finite")
}
