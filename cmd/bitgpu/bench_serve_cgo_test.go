//go:build cgo

package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// TestServePlanIsPlanMemory: bench serve's cgo-free weight and KV-cache bytes are those of the
// GPU's memory plan (runtime.PlanMemory, built with cgo only) for every preset and family, ternary
// and F16.
func TestServePlanIsPlanMemory(t *testing.T) {
	for _, preset := range []string{"tiny", "2b4t"} {
		for _, fam := range model.SynthFamilies {
			opt, err := model.SynthPreset(preset)
			require.NoError(t, err)
			opt.Family = fam
			cfg, err := opt.Config()
			require.NoError(t, err)
			for _, f16 := range []bool{false, true} {
				w, kv := servePlan(cfg, 300, f16)
				p := runtime.PlanMemory(cfg, 300, f16)
				require.Equal(t, p.Weights, w, "%s %s f16=%v", preset, fam, f16)
				require.Equal(t, p.KVCache, kv, "%s %s f16=%v", preset, fam, f16)
			}
		}
	}
}
