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
// D must be a multiple of 4 when QUANT=1. local_size_x must be 64 (cpuref.NormLanes).
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

shared float red[gl_WorkGroupSize.x];
shared int redi[gl_WorkGroupSize.x];

float reduce_sum(float v) {
	uint lid = gl_LocalInvocationID.x;
	red[lid] = v;
	barrier();
	for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
		if (lid < s) {
			precise float sum = red[lid] + red[lid + s];
			red[lid] = sum;
		}
		barrier();
	}
	float r = red[0];
	barrier();
	return r;
}

float reduce_max(float v) {
	uint lid = gl_LocalInvocationID.x;
	red[lid] = v;
	barrier();
	for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
		if (lid < s) red[lid] = max(red[lid], red[lid + s]);
		barrier();
	}
	float r = red[0];
	barrier();
	return r;
}

int reduce_isum(int v) {
	uint lid = gl_LocalInvocationID.x;
	redi[lid] = v;
	barrier();
	for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
		if (lid < s) redi[lid] += redi[lid + s];
		barrier();
	}
	int r = redi[0];
	barrier();
	return r;
}

void main() {
	uint t = gl_WorkGroupID.x;
	uint base = p.x_off + t * p.x_stride;
	uint lid = gl_LocalInvocationID.x;
	uint nt = gl_WorkGroupSize.x;

#if NORM
	precise float ss = 0.0;
	for (uint i = lid; i < p.D; i += nt) {
		float v = x[base + i];
		ss = ss + v * v;
	}
	precise float mean = reduce_sum(ss) * cr_rcp(float(p.D));
	float inv = cr_rsqrt(mean + p.eps);
#define NORMED(i) (x[base + (i)] * inv * w[(i)])
#else
#define NORMED(i) (x[base + (i)])
#endif
#if QUANT
	float amax = 0.0;
	for (uint i = lid; i < p.D; i += nt) {
		precise float yv = NORMED(i);
		amax = max(amax, abs(yv));
	}
	amax = reduce_max(amax);
	precise float s = 127.0 * cr_rcp(max(amax, uintBitsToFloat(0x3727C5ACu))); // 1e-5
	int qsum = 0;
	uint obase = p.out_off + t * p.out_stride;
	for (uint i4 = lid; i4 < p.D / 4; i4 += nt) {
		uint word = 0u;
		for (uint b = 0u; b < 4u; b++) {
			uint i = 4u * i4 + b;
			precise float yv = NORMED(i);
			precise float scaled = yv * s;
			int qv = int(clamp(roundEven(scaled), -128.0, 127.0));
			qsum += qv;
			word |= (uint(qv) & 0xffu) << (8u * b);
		}
		q[obase + i4] = word;
	}
	qsum = reduce_isum(qsum);
	if (lid == 0) {
		s_out[2 * (p.s_off + t)] = floatBitsToUint(cr_rcp(s));
		s_out[2 * (p.s_off + t) + 1] = uint(qsum);
	}
#else
	uint obase = p.out_off + t * p.out_stride;
	for (uint i = lid; i < p.D; i += nt) {
		precise float yv = NORMED(i);
		y[obase + i] = yv;
	}
#endif
}
