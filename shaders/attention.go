package shaders

// The fused attention kernels: attention.comp (FlashAttention-style prefill and the split-K
// pass of decode, specialized per head dimension and tile shape by constants 3..5) and
// attention_merge.comp (combines the split-K partial results). Both use shared memory only, so
// one variant of each serves every Vulkan 1.1 device.
func init() {
	Variants = append(Variants,
		Variant{Name: "attention", Source: "attention.comp"},
		Variant{Name: "attention_merge", Source: "attention_merge.comp"},
	)
}
