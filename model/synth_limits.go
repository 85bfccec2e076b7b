package model

import (
	"fmt"
	"math/bits"
	"strings"
)

// Bounds on what WriteSynthetic generates, so that absurd shapes are refused with an error rather
// than exhausting memory or disk. The 2b4t preset is far inside all of them.
const (
	// SynthMaxBytes bounds the size of the GGUF file the options imply (64 GiB); a file under it
	// that does not fit on the disk fails to write and leaves nothing behind.
	SynthMaxBytes = 64 << 30
	// SynthMaxTensorElems bounds the elements of one projection, which is generated in memory
	// (one byte per trit plus its encoding).
	SynthMaxTensorElems = 1 << 31
	// SynthMaxVocab bounds the vocabulary, whose tokens and merges are built in memory.
	SynthMaxVocab = 1 << 21
	// SynthMaxLayers bounds the transformer blocks.
	SynthMaxLayers = 1 << 12
	// SynthMaxCtx bounds the context length (a GGUF uint32 key).
	SynthMaxCtx = 1 << 24
)

// SynthSizeError is the error SynthOptions.Config returns for shapes over one of the SynthMax*
// bounds. Option names the option most to blame — "vocab", "dim", "layers", "ffn" or "ctx", as
// the synth command's flags are named — and Value its value; Reason says what is too large.
type SynthSizeError struct {
	Option string
	Value  int
	Reason string
}

// Error implements error: "synth: <option> <value> is too large: <reason>".
func (e *SynthSizeError) Error() string {
	return fmt.Sprintf("synth: %s %d is too large: %s", e.Option, e.Value, e.Reason)
}

// humanBytes formats n bytes with a binary unit ("1.5 GiB").
func humanBytes(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}

// satMul and satAdd are uint64 arithmetic that saturates at the maximum instead of wrapping.
func satMul(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 {
		return ^uint64(0)
	}
	return lo
}

func satAdd(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return ^uint64(0)
	}
	return s
}

// checkSynthSize returns a *SynthSizeError when o (defaults filled, c its Config) exceeds a
// SynthMax* bound. The counts are checked first, then every projection's elements (in saturating
// arithmetic), then the file size, computed without listing every layer's tensors: the tensors of
// a one-layer model split into per-layer and global ones, per-layer bytes times Layers, plus an
// estimate of the tokenizer metadata. Shapes a weight type cannot encode are left to Config.
func (o SynthOptions) checkSynthSize(c Config) error {
	for _, b := range []struct {
		name       string
		value, max int
	}{{"vocab", o.Vocab, SynthMaxVocab}, {"layers", o.Layers, SynthMaxLayers}, {"ctx", o.Ctx, SynthMaxCtx}} {
		if b.value > b.max {
			return &SynthSizeError{b.name, b.value, fmt.Sprintf("synth writes at most %d", b.max)}
		}
	}
	ref, _ := SynthPreset("2b4t")
	// blame picks, among the named options, the one furthest above its 2b4t value.
	blame := func(names ...string) *SynthSizeError {
		vals := map[string][2]int{"vocab": {o.Vocab, ref.Vocab}, "dim": {o.Dim, ref.Dim}, "layers": {o.Layers, ref.Layers}, "ffn": {o.FFN, ref.FFN}}
		best, ratio := names[0], -1.0
		for _, n := range names {
			if r := float64(vals[n][0]) / float64(vals[n][1]); r > ratio {
				best, ratio = n, r
			}
		}
		return &SynthSizeError{Option: best, Value: vals[best][0]}
	}
	one := c
	one.Layers = 1
	var global, perLayer uint64
	for _, s := range one.TensorSpecs() {
		elems := uint64(1)
		for _, d := range s.Shape {
			elems = satMul(elems, d)
		}
		if s.Kind == KindWeight && elems > SynthMaxTensorElems {
			e := blame("dim", "ffn")
			name := strings.Replace(s.Name, "blk.0.", "blk.N.", 1)
			e.Reason = fmt.Sprintf("projection %s would have %d elements, over synth's %d per tensor", name, elems, uint64(SynthMaxTensorElems))
			return e
		}
		size := ^uint64(0) // F16 embeddings and F32 norms take at least 2 bytes an element
		if elems <= SynthMaxBytes/2 {
			var err error
			if size, err = TensorBytes(o.weightType(s.Kind), s.Shape); err != nil {
				return nil // Config reports the tensor the type cannot encode
			}
			size = alignUp(size, GGUFDefaultAlignment)
		}
		if strings.HasPrefix(s.Name, "blk.") {
			perLayer = satAdd(perLayer, size)
		} else {
			global = satAdd(global, size)
		}
	}
	// The tokenizer metadata (tokens, types, merges) takes well under 64 bytes a token.
	total := satAdd(satAdd(global, satMul(perLayer, uint64(o.Layers))), satMul(uint64(o.Vocab), 64))
	if total > SynthMaxBytes {
		e := blame("vocab", "dim", "layers", "ffn")
		e.Reason = fmt.Sprintf("vocab %d, dim %d, %d layers and ffn %d make a model file of about %s, over synth's %s limit",
			o.Vocab, o.Dim, o.Layers, o.FFN, humanBytes(total), humanBytes(SynthMaxBytes))
		return e
	}
	return nil
}
