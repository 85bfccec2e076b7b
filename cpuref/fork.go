package cpuref

import "fmt"

// NewSequence returns a Backend for another sequence of the same model: it shares b's weights
// (ternary matrices, norms, the memory-mapped embedding and the logits matrix) and has its own
// empty KV cache of b's capacity, checked against the available memory as New checks it. The two
// may run at the same time (the weights are only read). b must outlive it.
func (b *Backend) NewSequence() (*Backend, error) {
	if b.closed {
		return nil, fmt.Errorf("cpuref: backend is closed")
	}
	if err := CheckKVCache(b.cfg, b.ctx); err != nil {
		return nil, err
	}
	n := &Backend{cfg: b.cfg, ctx: b.ctx, embd: b.embd, out: b.out, norm: b.norm, layers: b.layers,
		lora: append(LoRAScales(nil), b.lora...)} // the same adapters, at b's scales, set apart
	n.kCache, n.vCache = NewKVCache(b.cfg, b.ctx)
	return n, nil
}
