package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sort"
)

// MaxContextLength is the largest context length, in tokens, that `convert` writes (16 Mi
// tokens, above every released model's). A checkpoint declaring more is refused with an error
// naming the config.json key: the value is copied into the GGUF, and no backend could hold a KV
// cache that long. Open accepts any positive context length; the backends size their caches by
// --ctx through a checked memory plan.
const MaxContextLength = 1 << 24

// fileLimits is what a file's tensors can hold, which bounds the hyper-parameters it may declare
// before anything is sized from them: the number of tensors, the elements of the largest one and
// the elements of all of them together (packed HF weights counted at 4 per byte; saturating).
type fileLimits struct {
	tensors              int
	maxElems, totalElems uint64
}

// limitsOf returns the fileLimits of a GGUF-style tensor map (element counts from the shapes).
func limitsOf(tensors map[string]*Tensor) fileLimits {
	l := fileLimits{tensors: len(tensors)}
	for _, t := range tensors {
		if t != nil {
			l.add(shapeElems(t.Shape))
		}
	}
	return l
}

// add counts one tensor of n elements.
func (l *fileLimits) add(n uint64) {
	l.maxElems = max(l.maxElems, n)
	l.totalElems = addSat(l.totalElems, n)
}

// shapeElems is the product of shape, saturating at 2^64-1 (0 for an empty shape).
func shapeElems(shape []uint64) uint64 {
	if len(shape) == 0 {
		return 0
	}
	n := uint64(1)
	for _, d := range shape {
		n = mulSat(n, d)
	}
	return n
}

// mulSat is a*b, saturating at 2^64-1 (the same as synth_limits.go's satMul).
func mulSat(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}

// addSat is a+b, saturating at 2^64-1.
func addSat(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return s
}

// configKeys names, for messages, where the hyper-parameters came from: each field is a prefix
// such as "metadata key bitnet-b1.58.block_count" or "config.json: num_hidden_layers", and where
// is the file ("the file", "the checkpoint").
type configKeys struct {
	layers, dim, ffn, vocab, where string
}

// genericKeys names Config fields when no file key is known (ValidateTensors).
var genericKeys = configKeys{layers: "config: layers", dim: "config: dim", ffn: "config: ffn", vocab: "config: vocab", where: "the tensor set"}

// checkFits bounds c's sizes by what a file holding l can contain, before TensorSpecs (which
// allocates per declared layer) or anything else is sized from them: the 7 projections per layer
// of c.Layers layers against l.tensors; Dim, FFNDim, VocabSize and the embedding (Dim*VocabSize)
// and feed-forward (Dim*FFNDim) matrices against the largest tensor, in overflow-safe products.
// The bounds are loose on purpose, so a file that merely lacks a tensor or has one of the wrong
// shape still gets ValidateTensors' message naming it. The error names the key (from keys) with
// its value and the file's limit.
func (c *Config) checkFits(l fileLimits, keys configKeys) error {
	if need := mulSat(uint64(max(c.Layers, 0)), 7); need > uint64(l.tensors) {
		return fmt.Errorf("%s = %d: %s has only %d tensors (a model with that many layers needs at least %d: 7 projections per layer)", keys.layers, c.Layers, keys.where, l.tensors, need)
	}
	for _, f := range []struct {
		key string
		v   int
	}{{keys.dim, c.Dim}, {keys.ffn, c.FFNDim}, {keys.vocab, c.VocabSize}} {
		if f.v > 0 && uint64(f.v) > l.maxElems {
			return fmt.Errorf("%s = %d: larger than the largest tensor in %s (%d elements)", f.key, f.v, keys.where, l.maxElems)
		}
	}
	d, ff, v := uint64(max(c.Dim, 0)), uint64(max(c.FFNDim, 0)), uint64(max(c.VocabSize, 0))
	if n := mulSat(d, v); n > l.maxElems {
		return fmt.Errorf("%s = %d and %s = %d imply a %d-element embedding; the largest tensor in %s has %d elements", keys.dim, c.Dim, keys.vocab, c.VocabSize, n, keys.where, l.maxElems)
	}
	if n := mulSat(d, ff); n > l.maxElems {
		return fmt.Errorf("%s = %d and %s = %d imply %d-element feed-forward matrices; the largest tensor in %s has %d elements", keys.dim, c.Dim, keys.ffn, c.FFNDim, n, keys.where, l.maxElems)
	}
	return nil
}

// CheckFinite checks that every float value of tensors the forward pass reads is finite: all
// elements of F32, F16 and BF16 tensors (norms, the embedding and output matrices, float
// projections, `*.scale` tensors), the block scales of Q8_0, TQ1_0, TQ2_0, Q6_K tensors (d and dmin of Q4_K) and the
// per-tensor scale of I2_S tensors (ternary codes cannot be non-finite). Tensors are visited in
// name order; the first NaN or ±Inf is an error naming the tensor and the element (or block)
// index. Tensors without data, or too short for their shape, are skipped (ValidateTensors
// reports those). It reads every byte of the float tensors, four f16 values per 64-bit word: 0.17 s
// for the 656 MB F16 embedding of BitNet b1.58 2B4T (3.8 GB/s on a loaded 2-core machine), and
// 0.05 s for the block scales of its projections in TQ2_0 — bytes the backends read anyway (the
// GPU upload, the CPU's logits), so a file is not read twice from disk.
func CheckFinite(tensors map[string]*Tensor) error {
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := checkTensorFinite(tensors[n]); err != nil {
			return err
		}
	}
	return nil
}

// checkTensorFinite checks one tensor (CheckFinite).
func checkTensorFinite(t *Tensor) error {
	if t == nil || t.Data == nil {
		return nil
	}
	size, err := TensorBytes(t.Type, t.Shape)
	if err != nil || uint64(len(t.Data)) < size {
		return nil
	}
	data := t.Data[:size]
	switch t.Type {
	case TypeF32:
		if i := firstNonFinite32(data); i >= 0 {
			v := math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
			return fmt.Errorf("tensor %s: element %d is %v; weights must be finite", t.Name, i, v)
		}
	case TypeF16, TypeBF16:
		mask := uint16(0x7C00)
		if t.Type == TypeBF16 {
			mask = 0x7F80
		}
		if i := firstNonFinite16(data, mask); i >= 0 {
			return fmt.Errorf("tensor %s: element %d is %s; weights must be finite", t.Name, i, half16Name(binary.LittleEndian.Uint16(data[2*i:]), mask))
		}
	case TypeI2_S:
		n := shapeElems(t.Shape)
		s := math.Float32frombits(binary.LittleEndian.Uint32(data[n/4:]))
		if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
			return fmt.Errorf("tensor %s: I2_S scale is %v; weights must be finite", t.Name, s)
		}
	case TypeQ8_0, TypeTQ1_0, TypeTQ2_0, TypeQ4_K, TypeQ6_K:
		// The f16 block scale d: first in a Q8_0 block (d, 32 int8), last in TQ and Q6_K blocks;
		// Q4_K's d and dmin are its first two f16 values (dmin checked below).
		blockBytes, blockElems, off := 34, 32, 0
		switch t.Type {
		case TypeQ4_K:
			blockBytes, blockElems = Q4_KBlockBytes, KBlockElems
			for b, p := 0, 2; p+2 <= len(data); b, p = b+1, p+blockBytes {
				if h := binary.LittleEndian.Uint16(data[p:]); h&0x7C00 == 0x7C00 {
					return fmt.Errorf("tensor %s: the min scale of block %d (elements %d to %d) is %s; weights must be finite",
						t.Name, b, b*blockElems, (b+1)*blockElems-1, half16Name(h, 0x7C00))
				}
			}
		case TypeQ6_K:
			blockBytes, blockElems, off = Q6_KBlockBytes, KBlockElems, Q6_KBlockBytes-2
		case TypeTQ1_0:
			blockBytes, blockElems, off = TQ1_0BlockBytes, TQBlockElems, TQ1_0BlockBytes-2
		case TypeTQ2_0:
			blockBytes, blockElems, off = TQ2_0BlockBytes, TQBlockElems, TQ2_0BlockBytes-2
		}
		for b, p := 0, off; p+2 <= len(data); b, p = b+1, p+blockBytes {
			if h := binary.LittleEndian.Uint16(data[p:]); h&0x7C00 == 0x7C00 {
				return fmt.Errorf("tensor %s: the scale of block %d (elements %d to %d) is %s; weights must be finite",
					t.Name, b, b*blockElems, (b+1)*blockElems-1, half16Name(h, 0x7C00))
			}
		}
	}
	return nil
}

// half16Name spells a non-finite f16 (mask 0x7C00) or bf16 (mask 0x7F80) bit pattern.
func half16Name(h, mask uint16) string {
	switch {
	case h&^0x8000 != mask:
		return "NaN"
	case h&0x8000 != 0:
		return "-Inf"
	}
	return "+Inf"
}

// firstNonFinite16 returns the index of the first 16-bit float in data whose exponent bits (mask:
// 0x7C00 for f16, 0x7F80 for bf16) are all set — an Inf or NaN — or -1. Four values are tested
// per 64-bit word: with t = (x & M) ^ M each lane is 0 exactly for a non-finite value, and as a
// lane of t is below 0x8000, adding 0x7FFF sets its top bit exactly when it is not 0, without a
// carry into the next lane.
func firstNonFinite16(data []byte, mask uint16) int {
	m := uint64(mask) * 0x0001000100010001
	const top, low = 0x8000800080008000, 0x7FFF7FFF7FFF7FFF
	i := 0
	for ; i+8 <= len(data); i += 8 {
		t := (binary.LittleEndian.Uint64(data[i:]) & m) ^ m
		if (t+low)&top != top {
			break
		}
	}
	for ; i+2 <= len(data); i += 2 {
		if binary.LittleEndian.Uint16(data[i:])&mask == mask {
			return i / 2
		}
	}
	return -1
}

// firstNonFinite32 returns the index of the first f32 in data that is an Inf or NaN, or -1 (two
// values per 64-bit word, as firstNonFinite16).
func firstNonFinite32(data []byte) int {
	const m, top, low = 0x7F8000007F800000, 0x8000000080000000, 0x7FFFFFFF7FFFFFFF
	i := 0
	for ; i+8 <= len(data); i += 8 {
		t := (binary.LittleEndian.Uint64(data[i:]) & m) ^ m
		if (t+low)&top != top {
			break
		}
	}
	for ; i+4 <= len(data); i += 4 {
		if binary.LittleEndian.Uint32(data[i:])&0x7F800000 == 0x7F800000 {
			return i / 4
		}
	}
	return -1
}

// hfKeys names the config.json keys behind Config fields (OpenHF).
var hfKeys = configKeys{layers: "config.json: num_hidden_layers", dim: "config.json: hidden_size",
	ffn: "config.json: intermediate_size", vocab: "config.json: vocab_size", where: "the checkpoint"}

// floatsFinite returns an error naming file, the HF tensor and the element index of the first
// NaN or Inf in x (a checkpoint tensor decoded to f32), or nil.
func floatsFinite(file, name string, x []float32) error {
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%s: tensor %s: element %d is %v; weights must be finite", file, name, i, v)
		}
	}
	return nil
}
