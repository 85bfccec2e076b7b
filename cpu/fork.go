package cpu

import (
	"fmt"

	"github.com/bitgpu/bitgpu/cpuref"
)

// NewSequence returns a Backend for another sequence of the same model: it shares b's weights
// (the packed projections, the norms, the memory-mapped embedding and the logits matrix, Q8_0
// copy included), its kernel and its worker pool, and has its own empty KV cache of b's capacity
// and its own scratch. Only the KV cache (2·Layers·ctx·KVHeads·HeadDim·2 bytes) and the scratch
// are new. Because the pool is shared, b and the Backends made from it must not run at the same
// time (a serving scheduler steps one sequence at a time); each is still not safe for concurrent
// use. Closing the new Backend releases its cache only; b must outlive it (b's Close stops the
// pool). The cache is checked against the available memory as New checks it.
func (b *Backend) NewSequence() (*Backend, error) {
	if b.closed {
		return nil, fmt.Errorf("cpu: backend is closed")
	}
	if err := cpuref.CheckKVCache(b.cfg, b.ctx); err != nil {
		return nil, err
	}
	n := &Backend{cfg: b.cfg, ctx: b.ctx, embd: b.embd, out: b.out, norm: b.norm, layers: b.layers,
		forked: true, eng: engine{pool: b.eng.pool, kernel: b.eng.kernel},
		lora: append(cpuref.LoRAScales(nil), b.lora...), loraRank: b.loraRank}
	n.kCache, n.vCache = cpuref.NewKVCache(b.cfg, b.ctx)
	return n, nil
}
