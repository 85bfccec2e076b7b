#version 450
// Greedy decoding on the device: the index of the largest of n floats (the lowest index on ties,
// -0 equal to +0; NaNs skipped; n = 0 or all NaN gives 0xffffffff), cpuref.Argmax's answer, in the
// order of argmax.glsl, in two levels; STAGE (constant 3) picks the kernel:
//   1  argmax_partial  the first level of the parallel argmax: workgroup w of G reduces the
//                      elements i = 256w + l, 256w + l + 256G, ... (l: its invocations) of
//                      x[x_off .. x_off+n) to one candidate, written as the pair (key, index) at
//                      out[out_off + 2w] (argmax.glsl's key; index 0xffffffff: none).
//   2  argmax_reduce   the second level, one workgroup: out[out_off] = the index of the best of
//                      the n candidate pairs at x[x_off .. x_off+2n) — argmax_partial's, or the
//                      LM heads' fused argmax epilogue's (q8_matvec.comp, f16_matvec.comp).
// Each invocation scans its elements in order, then the workgroup's candidates meet in a shared-
// memory tree; the order is total, so every split gives the one-pass scan's index.
// (runtime.Kernels.ArgmaxParallel, ArgmaxReduce.)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "argmax.glsl"

layout(constant_id = 3) const uint STAGE = 1;

layout(set = 0, binding = 0) readonly buffer X { uint x[]; }; // float bits (STAGE 1) or pairs (2)
layout(set = 0, binding = 1) writeonly buffer Out { uint outv[]; };

layout(push_constant) uniform Push {
	uint n;       // elements (STAGE 1) or candidate pairs (STAGE 2)
	uint x_off;   // first word of the input in x
	uint out_off; // the word the index goes to (STAGE 2), or the first pair's (STAGE 1)
} p;

shared uint best_k[gl_WorkGroupSize.x];
shared uint best_i[gl_WorkGroupSize.x];

void main() {
	uint lid = gl_LocalInvocationID.x;
	uint bk = 0u;
	uint bi = AM_NONE;
	uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	for (uint i = gl_WorkGroupID.x * gl_WorkGroupSize.x + lid; i < p.n; i += stride) {
		uint k, idx;
		if (STAGE == 2u) {
			k = x[p.x_off + 2u * i];
			idx = x[p.x_off + 2u * i + 1u];
		} else {
			uint bits = x[p.x_off + i];
			k = am_key(bits);
			idx = am_isnan(bits) ? AM_NONE : i;
		}
		if (am_better(k, idx, bk, bi)) {
			bk = k;
			bi = idx;
		}
	}
	best_k[lid] = bk;
	best_i[lid] = bi;
	barrier();
	for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1) {
		if (lid < s && am_better(best_k[lid + s], best_i[lid + s], best_k[lid], best_i[lid])) {
			best_k[lid] = best_k[lid + s];
			best_i[lid] = best_i[lid + s];
		}
		barrier();
	}
	if (lid == 0u) {
		if (STAGE == 1u) {
			outv[p.out_off + 2u * gl_WorkGroupID.x] = best_k[0];
			outv[p.out_off + 2u * gl_WorkGroupID.x + 1u] = best_i[0];
		} else {
			outv[p.out_off] = best_i[0];
		}
	}
}
