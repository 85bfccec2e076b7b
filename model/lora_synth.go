package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
)

// SynthLoRA returns a random LoRA of rank rank and alpha alpha for a model of cfg, adapting the
// projections whose GGUF suffixes are in targets (nil: all seven of LoRAProjections) in every
// layer — the adapter parity tests and benchmarks use it. A's elements are uniform in
// ±1/sqrt(in) and B's in ±gain/sqrt(rank), rounded to f16, so B(A·x) has about gain times the
// RMS of a normed input; the PCG stream is fixed by seed. Errors: a non-positive rank, an
// unknown target.
func SynthLoRA(cfg Config, rank int, alpha, gain float32, seed uint64, targets []string) (*LoRA, error) {
	if rank <= 0 {
		return nil, fmt.Errorf("synthetic LoRA: rank %d must be positive", rank)
	}
	if targets == nil {
		for _, p := range LoRAProjections {
			targets = append(targets, p.GGUF)
		}
	}
	qDim, kvDim := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
	widths := map[string][2]int{ // in, out
		"attn_q": {cfg.Dim, qDim}, "attn_k": {cfg.Dim, kvDim}, "attn_v": {cfg.Dim, kvDim}, "attn_output": {qDim, cfg.Dim},
		"ffn_gate": {cfg.Dim, cfg.FFNDim}, "ffn_up": {cfg.Dim, cfg.FFNDim}, "ffn_down": {cfg.FFNDim, cfg.Dim},
	}
	rng := rand.New(rand.NewPCG(seed, 0x10AA))
	fill := func(name string, cols, rows int, bound float64) *Tensor {
		t := &Tensor{Name: name, Type: TypeF16, Shape: []uint64{uint64(cols), uint64(rows)}, Data: make([]byte, 2*cols*rows)}
		for i := range cols * rows {
			binary.LittleEndian.PutUint16(t.Data[2*i:], F32ToF16(float32((2*rng.Float64()-1)*bound)))
		}
		return t
	}
	l := &LoRA{Path: fmt.Sprintf("synthetic-lora-r%d-seed%d", rank, seed), Name: "synthetic", Alpha: alpha, Targets: map[string]LoRAPair{}}
	for i := range cfg.Layers {
		for _, suffix := range targets {
			w, ok := widths[suffix]
			if !ok {
				return nil, fmt.Errorf("synthetic LoRA: unknown target %q", suffix)
			}
			base := fmt.Sprintf("blk.%d.%s.weight", i, suffix)
			l.Targets[base] = LoRAPair{
				A: fill(base+".lora_a", w[0], rank, 1/math.Sqrt(float64(w[0]))),
				B: fill(base+".lora_b", rank, w[1], float64(gain)/math.Sqrt(float64(rank))),
			}
		}
	}
	return l, nil
}
