package model

import "math"

// LoRA is one low-rank adapter for a ternary (or float) base model, as llama.cpp's GGUF LoRA
// adapters and PEFT's LoRA directories store it (OpenLoRA). Each adapted projection W (a base
// tensor such as "blk.3.attn_q.weight", GGUF shape [in, out]) gains
//
//	y = W(x) + scaling · B(A·x)
//
// on the projection's float input x (after the RMSNorm or sub-norm, before the int8
// quantization of a BitLinear), where scaling = Alpha/rank (Alpha/sqrt(rank) with RSLoRA) times
// the user's scale (--lora FILE:SCALE). This is what PEFT computes around transformers'
// BitNet layers (peft/tuners/lora/layer.py, Linear.forward) and llama.cpp's llm_build_lora_mm
// (src/llama-graph.cpp) for float bases.
type LoRA struct {
	// Path is the file or directory the adapter was read from.
	Path string
	// Name is general.name (GGUF) or the directory's base name (PEFT).
	Name string
	// Alpha is adapter.lora.alpha (GGUF) or lora_alpha (PEFT); 0 in a GGUF file means the rank
	// (scaling 1), as llama.cpp reads it.
	Alpha float32
	// RSLoRA scales by Alpha/sqrt(rank) instead of Alpha/rank (PEFT's use_rslora).
	RSLoRA bool
	// Targets are the adapted projections by base tensor name ("blk.N.attn_q.weight", ...).
	Targets map[string]LoRAPair
	// Arch is the base architecture the adapter is for: general.architecture of a GGUF adapter
	// (llama.cpp refuses an adapter whose architecture differs from its base's), or, for a PEFT
	// directory, empty until Check binds the adapter to a base. WriteLoRAGGUF writes it.
	Arch Arch
	// HFRows says B's output rows are in Hugging Face order, as PEFT stores them. For attn_q and
	// attn_k that differs from a base with NORM RoPE (arch llama), whose Q/K rows llama.cpp's
	// converter permutes (PermuteQKNorm); Check permutes B into the base's order and clears
	// HFRows. A GGUF adapter is in its base's order (false).
	HFRows bool

	// src names each target's A and B tensors as the adapter file spells them, for errors.
	src map[string][2]string
}

// LoRAPair is the two factors of one adapted projection, both held as F16 tensors in GGUF
// shape order (values rounded to nearest-even f16 at load when the file stores F32 or BF16):
// A is [in, rank] (rank rows of in values) and B is [rank, out] (out rows of rank values).
type LoRAPair struct {
	A, B *Tensor
}

// Rank is the pair's rank r: A's row count.
func (p LoRAPair) Rank() int {
	if p.A == nil || len(p.A.Shape) != 2 {
		return 0
	}
	return int(p.A.Shape[1])
}

// Scaling returns the factor B(A·x) is multiplied by for pair p at user scale s, rounded once
// to float32: s·Alpha/r, or s·Alpha/sqrt(r) with RSLoRA, with Alpha = r when it is 0. It is
// computed in float64 so every backend derives the same float32.
func (l *LoRA) Scaling(p LoRAPair, s float32) float32 { return l.ScalingRank(p.Rank(), s) }

// ScalingRank is Scaling for a pair of rank rank (0 gives 0).
func (l *LoRA) ScalingRank(rank int, s float32) float32 {
	r := float64(rank)
	if r == 0 {
		return 0
	}
	alpha := float64(l.Alpha)
	if alpha == 0 {
		alpha = r
	}
	d := r
	if l.RSLoRA {
		d = math.Sqrt(r)
	}
	return float32(float64(s) * alpha / d)
}

// LoRAProjections are the base projections an adapter may target, as GGUF tensor suffixes
// ("blk.N." + suffix + ".weight"), with the transformers module names PEFT's target_modules
// use for them.
var LoRAProjections = []struct{ GGUF, HF string }{
	{"attn_q", "q_proj"}, {"attn_k", "k_proj"}, {"attn_v", "v_proj"}, {"attn_output", "o_proj"},
	{"ffn_gate", "gate_proj"}, {"ffn_up", "up_proj"}, {"ffn_down", "down_proj"},
}
