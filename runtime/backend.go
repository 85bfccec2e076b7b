// Package runtime turns a model into GPU buffers and recorded command buffers, and holds what every
// backend shares: the Backend interface, the sampler and the generation loop.
package runtime

import (
	"fmt"

	"github.com/bitgpu/bitgpu/cpu"
	"github.com/bitgpu/bitgpu/model"
)

// Backend is one model's forward pass over a KV cache. cpuref.Backend (plain Go) and the Vulkan
// backend in this package both implement it, so generation, perplexity and parity tests take either.
//
// Logits are float32, VocabSize per token. Positions count tokens from 0 at the start of the cache.
type Backend interface {
	// Config returns the model hyper-parameters.
	Config() model.Config
	// Prefill appends tokens to the KV cache at positions Pos()..Pos()+len(tokens)-1 and returns
	// logits. With allLogits it returns len(tokens)*VocabSize values (row t is token t's logits),
	// otherwise only the last token's VocabSize values. It returns an error when the cache would
	// exceed the context length or a token id is outside [0, VocabSize).
	Prefill(tokens []int, allLogits bool) ([]float32, error)
	// Decode appends one token at Pos() and returns its VocabSize logits (errors as Prefill).
	Decode(token int) ([]float32, error)
	// Pos is the number of tokens in the KV cache.
	Pos() int
	// Reset empties the KV cache (Pos() becomes 0).
	Reset()
	// Close releases the backend's memory; the Backend must not be used after.
	Close() error
}

// LoRABackend is a Backend with LoRA adapters loaded (cpuref.Backend, cpu.Backend and the
// Vulkan backend, given adapters at load) whose scales can change between forward passes: the
// server sets them per request.
type LoRABackend interface {
	Backend
	// LoRAAdapters is the number of adapters loaded.
	LoRAAdapters() int
	// SetLoRAScales sets each adapter's user scale, in load order (0 switches one off). It
	// returns an error, changing nothing, for the wrong number of scales or a non-finite one.
	SetLoRAScales(scales []float32) error
}

// BatchDecoder runs one decode step of several sequences — Backends of one model sharing its
// weights — as one forward pass: every matrix product over the B tokens together (each weight
// read once for all of them), RoPE, the KV store, attention and LoRA per sequence. A serving
// engine groups its slots' decode steps with it. AsBatchDecoder finds a Backend's.
type BatchDecoder interface {
	// CanBatch reports whether s can be one of DecodeBatch's sequences (for the CPU backend: s
	// shares the weights and worker pool, cpu.Backend.SharesWeights).
	CanBatch(s Backend) bool
	// DecodeBatch appends tokens[i] to seqs[i] at its own Pos() and returns len(seqs) rows of
	// VocabSize logits, row i seqs[i]'s — bit for bit what seqs[i].Decode(tokens[i]) returns,
	// whatever the other sequences. It returns an error, leaving every Pos() unchanged, for no
	// sequences, len(tokens) != len(seqs), a sequence CanBatch refuses or given twice, a token
	// outside [0, VocabSize) or a full cache.
	DecodeBatch(seqs []Backend, tokens []int) ([][]float32, error)
}

// StepBatcher is a BatchDecoder whose batched step also takes prompt chunks (the GPU's paged
// sequences, PagedKV): one forward pass over any number of tokens of each of several sequences,
// so a serving engine prefills new requests in the same pass as the other sequences' decode
// steps (chunked prefill).
type StepBatcher interface {
	BatchDecoder
	// StepBatch appends tokens[i] (one or more) to seqs[i] and returns, per sequence, the
	// VocabSize logits of its last token — bit for bit what seqs[i].Prefill(tokens[i], false)
	// returns. Errors, changing no Pos(), as DecodeBatch's (an empty tokens[i] too).
	StepBatch(seqs []Backend, tokens [][]int) ([][]float32, error)
}

// AsBatchDecoder returns b's batched decode step: b itself when it implements BatchDecoder, the
// batched step of the fast CPU backend (cpu.Backend.DecodeBatch, run by b) for a *cpu.Backend;
// ok is false for a Backend without one (cpuref, the Vulkan backend: one sequence a step).
func AsBatchDecoder(b Backend) (d BatchDecoder, ok bool) {
	switch b := b.(type) {
	case BatchDecoder:
		return b, true
	case *cpu.Backend:
		return cpuBatch{b}, true
	}
	return nil, false
}

// cpuBatch is cpu.Backend's DecodeBatch with runtime's types.
type cpuBatch struct{ b *cpu.Backend }

// CanBatch reports whether s is a *cpu.Backend sharing b's weights.
func (c cpuBatch) CanBatch(s Backend) bool {
	cs, ok := s.(*cpu.Backend)
	return ok && c.b.SharesWeights(cs)
}

// DecodeBatch converts seqs to *cpu.Backend (an error names one that is not) and runs
// cpu.Backend.DecodeBatch.
func (c cpuBatch) DecodeBatch(seqs []Backend, tokens []int) ([][]float32, error) {
	cs := make([]*cpu.Backend, len(seqs))
	for i, s := range seqs {
		b, ok := s.(*cpu.Backend)
		if !ok {
			return nil, fmt.Errorf("runtime: DecodeBatch: sequence %d is a %T, not the CPU backend's", i, s)
		}
		cs[i] = b
	}
	return c.b.DecodeBatch(cs, tokens)
}
