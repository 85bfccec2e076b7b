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
