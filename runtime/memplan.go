//go:build cgo

package runtime

import (
	"fmt"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// planRefusal is NewGPU's error when plan (for cfg with a ctx-token cache; f16 projections when
// f16; LM head head) exceeds heap bytes, the device's largest DEVICE_LOCAL heap. It names both sizes and what to
// change: when the weights alone exceed the heap it says so ("the weights alone need X, the
// largest heap has Y"; --ctx cannot help), likewise when weights and scratch do not fit even with
// a 1-token context; otherwise it names the largest --ctx that fits.
func planRefusal(path, device string, cfg model.Config, ctx int, f16 bool, head cpuref.LMHead, plan MemoryPlan, heap uint64) error {
	gib := func(b uint64) float64 { return float64(b) / (1 << 30) }
	if plan.Weights > heap {
		return fmt.Errorf("%s does not fit on %s: the weights alone need %.2f GiB, the largest heap has %.2f GiB; --ctx cannot help (use --device cpu or a device with more memory)",
			path, device, gib(plan.Weights), gib(heap))
	}
	if min1 := PlanMemoryHead(cfg, 1, f16, head); min1.Total() > heap {
		return fmt.Errorf("%s does not fit on %s: the weights and scratch need %.2f GiB even at --ctx 1 (%s), the largest heap has %.2f GiB; use --device cpu or a device with more memory",
			path, device, gib(min1.Total()), min1, gib(heap))
	}
	// The plan grows with ctx; find the largest ctx that fits by bisection.
	lo, hi := 1, ctx
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if PlanMemoryHead(cfg, mid, f16, head).Total() <= heap {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return fmt.Errorf("%s needs %.2f GiB of device memory (%s) but %s's largest heap has %.2f GiB; try --ctx %d or less",
		path, gib(plan.Total()), plan, device, gib(heap), lo)
}
