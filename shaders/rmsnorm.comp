#version 450
// RMSNorm of one token per workgroup of 64 invocations, y = (x * inv) * w with inv =
// 1/sqrt(mean(x^2) + eps) (Zhang & Sennrich 2019), bit for bit as cpuref.RMSNorm: invocation l
// sums x[i]^2 for i = l, l+64, ... in order, the 64 partials meet in the canonical tree (shared
// memory, s = 32 .. 1), mean = sum * cr_rcp(D), inv = cr_rsqrt(mean + eps). Two variants:
//   rmsnorm        (QUANT=0): writes y as f32 (the final output_norm before the logits).
//   rmsnorm_quant  (QUANT=1): fuses the BitLinear per-token int8 quantization (BitNet b1.58) of
//     cpuref.QuantizeActivations:
//       s = 127 * cr_rcp(max(max|y|, 1e-5)),  q = clamp(roundEven(y * s), -128, 127)
//     and writes q packed 4 per uint32 (little-endian bytes), plus per token the pair
//     (cr_rcp(s) as float bits, Σq as int) that the ternary matmul needs.
//   quantize       (QUANT=1, NORM=0): the quantization alone on y = x, for BitLinear inputs that
//     have no sub-norm before them (llama-arch ternary models): q and the pair as above.
// D must be a multiple of 4 when QUANT=1. local_size_x must be 64 (cpuref.NormLanes). The
// arithmetic is norm_quant.glsl's, which ternary_matmul.comp's fused prologue (NORMQ=1) shares.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "numerics.glsl"

#ifndef NORM
#define NORM 1
#endif

layout(set = 0, binding = 0) readonly buffer X { float x[]; };
#if NORM
layout(set = 0, binding = 1) readonly buffer W { float w[]; };
#define NEXT 2
#else
#define NEXT 1
#endif
#if QUANT
layout(set = 0, binding = NEXT) writeonly buffer Q { uint q[]; };
layout(set = 0, binding = NEXT + 1) writeonly buffer S { uint s_out[]; }; // [token][2]: 1/s bits, Σq
#else
layout(set = 0, binding = NEXT) writeonly buffer Y { float y[]; };
#endif

layout(push_constant) uniform Push {
	uint D;      // width
	uint x_off;  // first float of token 0 in x
	uint x_stride;
	uint out_off; // QUANT: first word of token 0 in q; else first float in y
	uint out_stride;
	uint s_off;  // QUANT: first token slot in s_out
	float eps;
} p;

// The token's input and the norm weight, for norm_quant.glsl.
uint x_base; // first float of this workgroup's token in x
#define NQ_X(i) (x[x_base + (i)])
#define NQ_W(i) (w[(i)])
#define NQ_NORM NORM
#include "norm_quant.glsl"

void main() {
	uint t = gl_WorkGroupID.x;
	x_base = p.x_off + t * p.x_stride;
	uint lid = gl_LocalInvocationID.x;
	uint nt = gl_WorkGroupSize.x;

#if NORM
	float inv = nq_inv(p.D, p.eps);
#else
	float inv = 1.0; // unused: y = x
#endif
#if QUANT
	float s = nq_scale(p.D, inv);
	int qsum = 0;
	uint obase = p.out_off + t * p.out_stride;
	for (uint i4 = lid; i4 < p.D / 4; i4 += nt) {
		q[obase + i4] = nq_word(i4, inv, s, qsum);
	}
	qsum = nq_total_qsum(qsum);
	if (lid == 0) {
		s_out[2 * (p.s_off + t)] = floatBitsToUint(cr_rcp(s));
		s_out[2 * (p.s_off + t) + 1] = uint(qsum);
	}
#else
	uint obase = p.out_off + t * p.out_stride;
	for (uint i = lid; i < p.D; i += nt) {
		precise float yv = NQ_Y(i, inv);
		y[obase + i] = yv;
	}
#endif
}
