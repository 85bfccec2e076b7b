package shaders

// The fused attention kernels: attention.comp (FlashAttention-style prefill and the split-K
// pass of decode, specialized per head dimension and query rows per workgroup by constants 3 and
// 4) and attention_merge.comp (folds the split-K chunk partials in chunk order). Both follow
// cpuref.Attention's canonical arithmetic bit for bit and use shared memory only, so one variant
// of each serves every Vulkan 1.1 device.
func init() {
	Variants = append(Variants,
		Variant{Name: "attention", Source: "attention.comp"},
		Variant{Name: "attention_merge", Source: "attention_merge.comp"},
	)
}
