// Package runtime turns a model into GPU buffers and recorded command buffers, and holds what every
// backend shares: the Backend interface, the sampler and the generation loop.
package runtime

import "github.com/bitgpu/bitgpu/model"

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
