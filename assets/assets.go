// Package assets holds bitgpu's built-in model, embedded in the binary so that bitgpu runs with
// no download: bitgpu-tiny, a BitNet b1.58 model with the 2B4T architecture (ReLU² gate,
// sub-norms, NEOX RoPE, GQA, tied F16 embedding) at a tiny size — width 256, 4 layers, 4 heads
// and 2 KV heads, FFN 768, context 256, a 768-token byte-level BPE vocabulary — trained by
// scripts/train_qat.py with quantization-aware training on the prose of the Python 3.11
// documentation (Debian's python3.11-doc, Python Software Foundation License) and converted to
// I2_S with `bitgpu convert`. Its training log and metrics sit beside it in this directory.
package assets

import (
	_ "embed"

	"github.com/bitgpu/bitgpu/model"
)

// Name is the built-in model's name, as messages show it (and its file name without ".gguf").
const Name = "bitgpu-tiny"

// tinyGGUF is the I2_S GGUF file of the built-in model.
//
//go:embed bitgpu-tiny.gguf
var tinyGGUF []byte

// Size is the size in bytes of the built-in model's GGUF file as embedded.
func Size() int { return len(tinyGGUF) }

// GGUF returns the built-in model's GGUF file as embedded in the binary (read-only: the slice
// aliases the binary's data, so it must not be modified).
func GGUF() []byte { return tinyGGUF }

// Open returns the built-in model, parsed from the embedded GGUF (model.OpenGGUFBytes; its Path is
// Name + ".gguf"). The tensors alias the embedded bytes, so nothing is copied; every call returns
// a fresh Model, and Close is not needed (it is harmless).
func Open() (*model.Model, error) {
	return model.OpenGGUFBytes(Name+".gguf", tinyGGUF)
}
