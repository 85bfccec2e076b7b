//go:build cgo

package bitgpu

import (
	"fmt"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// The Vulkan backend, linked in when cgo is (the binding to the Vulkan loader is cgo).
func init() {
	vulkanList = func() (names, types []string, err error) {
		infos, err := gpu.Enumerate()
		for _, in := range infos {
			names, types = append(names, in.Name), append(types, in.Type)
		}
		return names, types, err
	}
	vulkanOpen = func(o Options, m *model.Model, ctx int, head cpuref.LMHead) (runtime.Backend, error) {
		opts := runtime.GPUOptions{Ctx: ctx, LMHead: head, Packing: runtime.TernaryPacking(o.TernaryPacking), Progress: o.Progress, LoRA: o.adapters}
		if o.OnVulkanDevice != nil {
			opts.OnDevice = func(d *gpu.Device) { o.OnVulkanDevice(d) }
		}
		g, err := runtime.OpenGPU(m, opts)
		if err != nil {
			return nil, err
		}
		packing := g.Packing()
		if packing == "" {
			packing = "none (F16 projections)"
		}
		o.note("device %s; LM head %s; ternary packing %s; memory plan: %s", g.Device().Info(), g.LMHead(), packing, g.Plan())
		return g, nil
	}
	vulkanPaged = func(b runtime.Backend, n, positions int) ([]runtime.Backend, KVPool, error) {
		g, ok := b.(*runtime.GPU)
		if !ok {
			return nil, nil, fmt.Errorf("bitgpu: a paged KV cache needs the vulkan backend, not %T", b)
		}
		blocks := (positions + runtime.PagedBlock - 1) / runtime.PagedBlock
		if err := runtime.CheckPagedKV(g, blocks); err != nil {
			return nil, nil, err
		}
		g.DropOwnCache() // before the pool, so that its memory can serve the pool
		kv, err := runtime.NewPagedKV(g, blocks)
		if err != nil {
			return nil, nil, err
		}
		seqs := make([]runtime.Backend, n)
		for i := range seqs {
			if seqs[i], err = kv.NewSequence(); err != nil {
				kv.Close()
				return nil, nil, err
			}
		}
		return seqs, kv, nil
	}
}
