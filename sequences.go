package bitgpu

import (
	"fmt"

	"github.com/bitgpu/bitgpu/cpu"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/runtime"
)

// NewSequence returns another Backend for the Model's model, with its own empty KV cache of
// Context() tokens, for serving several sequences at once (package runtime/serve). On the CPU
// backends it shares the Model's weights and only the KV cache and scratch are new
// (cpu.Backend.NewSequence: it also shares the worker pool, so the Model's backend and its
// sequences must be stepped one at a time, as the serving engine does); on the GPU it opens a
// second device backend with its own copy of the weights. The caller closes it, before the Model.
func (m *Model) NewSequence() (runtime.Backend, error) {
	if m == nil || m.m == nil {
		return nil, fmt.Errorf("bitgpu: model is closed")
	}
	var seq interface {
		runtime.Backend
		SetLoRAScales([]float32) error
	}
	var err error
	switch b := m.b.(type) {
	case *cpu.Backend:
		seq, err = b.NewSequence()
	case *cpuref.Backend:
		seq, err = b.NewSequence()
	}
	if seq != nil || err != nil {
		if err == nil && len(m.adapters) > 0 { // a fork copies the current scales: start at the load-time ones
			err = seq.SetLoRAScales(cpuref.AdapterScales(m.adapters))
		}
		if err != nil {
			return nil, err
		}
		return seq, nil
	}
	if m.reopen == nil {
		return nil, fmt.Errorf("bitgpu: backend %s cannot open another sequence", m.backend)
	}
	return m.reopen() // a new backend: the adapters at their load-time scales
}

// KVPool is a paged KV cache that sequences share (NewPagedSequences): blocks of BlockSize
// positions, taken as a sequence grows and returned when it is reset or closed. The serving
// engine reserves its blocks per request (serve.Options.KVPool).
type KVPool interface {
	// Blocks reports the blocks the sequences hold and the pool's total.
	Blocks() (used, total int)
	// BlockSize is the number of positions in a block (32).
	BlockSize() int
	// Close frees the pool; its sequences must not be used after. Close it before the Model.
	Close() error
}

// vulkanPaged builds n sequences over one paged KV cache of the given positions on the Vulkan
// backend b; nil in a build without the Vulkan backend.
var vulkanPaged func(b runtime.Backend, n, positions int) ([]runtime.Backend, KVPool, error)

// NewPagedSequences returns n sequences of the Model's model sharing its weights and one paged KV
// cache of positions token positions (rounded up to whole blocks of 32), on the gpu (Vulkan) backend
// only: each sequence holds up to Context() tokens, takes blocks as it grows and gives them back
// on Reset or Close, and the sequences decode together in one batched step
// (runtime.BatchDecoder: every weight read once for all of them), each with exactly the logits
// of a Model of its own. The Model's own backend is not one of them: its own KV cache is freed
// before the pool is allocated, so that its memory serves the pool (runtime.GPU.DropOwnCache),
// and the Model's Generate, Chat and Perplexity fail after this call — also when the pool's
// allocation then fails (a pool too large for one storage binding is refused before anything is
// freed: runtime.CheckPagedKV). Close the pool after the sequences and before the Model. Errors: n or positions below 1,
// a backend other than gpu, LoRA adapters loaded (the batched step does not apply them; use
// NewSequence), or the device memory.
func (m *Model) NewPagedSequences(n, positions int) ([]runtime.Backend, KVPool, error) {
	switch {
	case m == nil || m.m == nil:
		return nil, nil, fmt.Errorf("bitgpu: model is closed")
	case n < 1:
		return nil, nil, fmt.Errorf("bitgpu: %d paged sequences (need at least 1)", n)
	case positions < 1:
		return nil, nil, fmt.Errorf("bitgpu: paged KV cache of %d positions (need at least 1)", positions)
	case m.backend != "gpu" || vulkanPaged == nil:
		return nil, nil, fmt.Errorf("bitgpu: a paged KV cache needs the gpu backend (this model runs on %s)", m.backend)
	case len(m.adapters) > 0:
		return nil, nil, fmt.Errorf("bitgpu: a paged KV cache does not apply LoRA adapters (%d loaded)", len(m.adapters))
	}
	return vulkanPaged(m.b, n, positions)
}
