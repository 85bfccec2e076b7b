//go:build cgo

package runtime

import (
	"fmt"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// planRefusal is NewGPU's error when plan (for cfg with a ctx-token cache; f16 projections when
// f16; LM head head) exceeds heap bytes, the device's largest DEVICE_LOCAL heap. It names both sizes and what to
// change: when the weights alone exceed the heap it says so ("the weights alone need X, the
// largest heap has Y"; --ctx cannot help), likewise when weights and scratch do not fit even with
// a 1-token context; otherwise it names the largest --ctx that fits.
func planRefusal(path, device string, cfg model.Config, ctx int, f16 bool, head cpuref.LMHead, plan MemoryPlan, heap uint64) error {
	gib := func(b uint64) float64 { return float64(b) / (1 << 30) }
	// What plan holds beyond PlanMemoryHead's count at any ctx (LoRA adapters, NewGPU's
	// embedding-table correction), added to every probe below.
	delta := int64(plan.Total()) - int64(PlanMemoryHead(cfg, ctx, f16, head).Total())
	total := func(c int) uint64 { return uint64(int64(PlanMemoryHead(cfg, c, f16, head).Total()) + delta) }
	if plan.Weights > heap {
		return fmt.Errorf("%s does not fit on %s: the weights alone need %.2f GiB, the largest heap has %.2f GiB; --ctx cannot help (use --device cpu or a device with more memory)",
			path, device, gib(plan.Weights), gib(heap))
	}
	if min1 := total(1); min1 > heap {
		return fmt.Errorf("%s does not fit on %s: the weights and scratch need %.2f GiB even at --ctx 1, the largest heap has %.2f GiB; use --device cpu or a device with more memory",
			path, device, gib(min1), gib(heap))
	}
	// The plan grows with ctx; find the largest ctx that fits by bisection.
	lo, hi := 1, ctx
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if total(mid) <= heap {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return fmt.Errorf("%s needs %.2f GiB of device memory (%s) but %s's largest heap has %.2f GiB; try --ctx %d or less",
		path, gib(plan.Total()), plan, device, gib(heap), lo)
}

// MemoryPlan is the device memory a model needs, in bytes.
type MemoryPlan struct {
	Weights, KVCache, Scratch uint64
	// LoRA is what LoRA adapters add (GPUOptions.LoRA): their factors, their scratch and the
	// activations the unfused adapted projections need; 0 without adapters.
	LoRA uint64
}

// Total is the sum of the parts.
func (p MemoryPlan) Total() uint64 { return p.Weights + p.KVCache + p.Scratch + p.LoRA }

// String reports the plan in MiB.
func (p MemoryPlan) String() string {
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	lora := ""
	if p.LoRA > 0 {
		lora = fmt.Sprintf(", LoRA %.1f MiB", mib(p.LoRA))
	}
	return fmt.Sprintf("weights %.1f MiB, KV cache %.1f MiB, scratch %.1f MiB%s, total %.1f MiB",
		mib(p.Weights), mib(p.KVCache), mib(p.Scratch), lora, mib(p.Total()))
}

// PlanMemory computes the device memory NewGPU will allocate for cfg with a ctx-token cache and
// the default LM head (cpuref.DefaultLMHead); f16 means F16 projections (2 bytes a weight instead
// of 2 bits).
func PlanMemory(cfg model.Config, ctx int, f16 bool) MemoryPlan {
	return PlanMemoryHead(cfg, ctx, f16, "")
}

// headQ8 reports whether head (cpuref.LMHeadF16, cpuref.LMHeadQ8_0, or "" for the default) is the
// q8_0 head.
func headQ8(head cpuref.LMHead) bool {
	return head == cpuref.LMHeadQ8_0 || head == "" && cpuref.DefaultLMHead == cpuref.LMHeadQ8_0
}

// planEmbedBytes is what PlanMemoryHead counts for the token-embedding table the decode step
// gathers its input from (EmbedGather): an F16 table (as BitNet files store it) of vocab x dim,
// none when the f16 head already holds the same tied table. NewGPU corrects it for the file's
// actual table (F32: 4 bytes a value; Q8_0/Q4_K/Q6_K: none, gathered on the host).
func planEmbedBytes(cfg model.Config, head cpuref.LMHead) uint64 {
	return deviceEmbedBytes(model.TypeF16, cfg.VocabSize, cfg.Dim, cfg.TiedEmbedding && !headQ8(head))
}

// PlanMemoryHead is PlanMemory for the LM head in effect head (cpuref.LMHeadF16: the F16 matrix,
// 2 bytes a logit weight; cpuref.LMHeadQ8_0: Q8HeadBytes, 1.0625; "": the default). Weights
// include the token-embedding table (planEmbedBytes); scratch only the activation buffers the
// recorded steps of that model use (allocScratch), the token ids and the host-visible logits.
func PlanMemoryHead(cfg model.Config, ctx int, f16 bool, head cpuref.LMHead) MemoryPlan {
	q8 := headQ8(head)
	if head == "" {
		head = cpuref.DefaultLMHead
	}
	qDim, kvDim := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
	d := DecodeBytesOf(cfg, f16, head) // projections, norms and head: what a decode step reads
	p := MemoryPlan{
		Weights: d.Weights + d.Head + planEmbedBytes(cfg, head),
		KVCache: uint64(ctx) * d.KVPerToken,
	}
	B := uint64(MaxBatch)
	dim, q, kv, ffn := uint64(cfg.Dim), uint64(qDim), uint64(kvDim), uint64(cfg.FFNDim)
	widest := uint64(max(cfg.Dim, qDim, cfg.FFNDim))
	s := 4*B*(dim+2*q+ffn) + 4*B + 4*B*uint64(cfg.VocabSize) // x, q, att, gate; token ids; logits
	if !q8 {
		s += 4 * B * dim // xn: the f16 head's input
	}
	if f16 || !RoPEFusable(cfg.HeadDim, cfg.RoPEDim) {
		s += 2 * 4 * B * kv // k, v: rope_kv's inputs
	}
	if f16 {
		s += 4*B*ffn + 4*B*widest // up, normed
	}
	if !f16 || q8 {
		s += B*widest + 8*B // qa, sq: int8 activations
	}
	p.Scratch = s + uint64(ctx*cfg.RoPEDim*4) + max(4, AttentionScratchBytes(uint32(cfg.Heads), uint32(cfg.HeadDim), uint32(ctx)))
	return p
}

// PlanMemoryPacked is PlanMemoryHead with the ternary projections in packing p (the layout in
// effect, 2bit or base3; PackingAuto counts as 2bit): with PackingBase3 the weights are
// ProjectionBytes(cfg, Packing2Bit) - ProjectionBytes(cfg, PackingBase3) bytes smaller (52
// instead of 64 bytes per 256 weights of every matrix whose columns are a multiple of 256). F16
// projections (f16) are not ternary and keep their size.
func PlanMemoryPacked(cfg model.Config, ctx int, f16 bool, head cpuref.LMHead, p TernaryPacking) MemoryPlan {
	plan := PlanMemoryHead(cfg, ctx, f16, head)
	plan.Weights -= packingSavings(cfg, f16, p)
	return plan
}
