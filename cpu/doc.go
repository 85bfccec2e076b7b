// Package cpu is bitgpu's fast CPU backend: the BitNet b1.58 forward pass of package cpuref with
// the same bits (the README's "Bit-exact contract"), made fast where the time goes.
//
//   - Ternary projections are repacked at load into 2-bit codes (code = trit+1) laid out for SIMD
//     (dot.go) and multiplied on amd64 by AVX-512 VNNI VPDPBUSD or AVX2 VPMADDUBSW (avo-generated
//     kernels), on arm64 by NEON SDOT or SMLAL/SADALP (hand-written, dot_arm64.s), the best one
//     chosen at run time from the CPU features, or elsewhere by a portable per-byte lookup table. All compute the exact int32 sums Σ t·q that cpuref computes, so any
//     order gives the same bits; the float steps after them (weight scale, runs of equal TQ block
//     scales, 1/s, the *.scale factor) are cpuref's, in cpuref's order.
//   - q/k/v and gate/up are fused into one matrix each, so a layer is four matrix products.
//   - Work is split by output rows (and by heads for attention, by vocabulary rows for the LM
//     head) over a persistent worker pool (pool.go) with a minimum amount of work per part, so
//     small matrices do not pay for threads that cannot help.
//   - Everything else (RMSNorm, activation quantization, the GLU, the KV cache's f16 rounding) calls
//     cpuref's exported functions; RoPE, attention and the F16 logits are re-implemented here in
//     cpuref's canonical order so that they can be split across workers and read precomputed
//     tables.
//
// The parity tests hold every kernel and whole models to cpuref bit for bit (require.Equal on the
// float32 values).
package cpu
