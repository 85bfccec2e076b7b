#version 450
// F16 matrix times f32 vectors: y[t][r] = Σ_j x[t][j] * E[r][j] for rows r of an F16 matrix
// stored as uint32 words of two halves (row-major, D/2 words per row; unpackHalf2x16 is exact, so
// no fp16 arithmetic or 16-bit storage is needed). The tied-embedding logits of BitNet b1.58 2B4T
// and the full-precision GEMV baseline of `bitgpu bench`. One subgroup (or 32 invocations) per row;
// TOKENS (constant 3) tokens share each matrix word read. A matrix larger than one storage-buffer
// binding is processed in row chunks, one dispatch each (row_base offsets the output).
#extension GL_GOOGLE_include_directive : require
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#include "common.glsl"

layout(constant_id = 3) const uint TOKENS = 1;

layout(set = 0, binding = 0) readonly buffer E { uint e[]; };
layout(set = 0, binding = 1) readonly buffer X { float x[]; };
layout(set = 0, binding = 2) buffer Y { float y[]; };

layout(push_constant) uniform Push {
	uint D;        // columns (even)
	uint N;        // rows in this chunk
	uint T;        // tokens
	uint x_off;    // first float of token 0 in x; tokens are D apart
	uint y_off;    // first float of token 0 in y
	uint y_stride; // floats between tokens in y
	uint row_base; // output index of the chunk's first row
	uint accumulate; // y += instead of y = (the fused residual connection)
} p;

#if USE_SUBGROUP
#define LANES gl_SubgroupSize
#define LANE gl_SubgroupInvocationID
#define ROW_IN_GROUP gl_SubgroupID
#define ROWS_PER_GROUP gl_NumSubgroups
#else
const uint LANES = 32;
#define LANE (gl_LocalInvocationID.x % 32u)
#define ROW_IN_GROUP (gl_LocalInvocationID.x / 32u)
#define ROWS_PER_GROUP (gl_WorkGroupSize.x / 32u)
shared float red[gl_WorkGroupSize.x];
#endif

void main() {
	uint row = gl_WorkGroupID.x * ROWS_PER_GROUP + ROW_IN_GROUP;
	uint t0 = gl_WorkGroupID.y * TOKENS;
	uint words = p.D / 2u;
	float acc[TOKENS];
	for (uint t = 0; t < TOKENS; t++) acc[t] = 0.0;
	if (row < p.N) {
		uint base = row * words;
		for (uint w = LANE; w < words; w += LANES) {
			vec2 ev = unpackHalf2x16(e[base + w]);
			for (uint t = 0; t < TOKENS; t++) {
				if (t0 + t < p.T) {
					uint xi = p.x_off + (t0 + t) * p.D + 2u * w;
					acc[t] += x[xi] * ev.x + x[xi + 1u] * ev.y;
				}
			}
		}
	}
	for (uint t = 0; t < TOKENS; t++) {
#if USE_SUBGROUP
		float total = subgroupAdd(acc[t]);
		bool leader = subgroupElect();
#else
		red[gl_LocalInvocationID.x] = acc[t];
		barrier();
		for (uint s = 16u; s > 0u; s >>= 1) {
			if (LANE < s) red[gl_LocalInvocationID.x] += red[gl_LocalInvocationID.x + s];
			barrier();
		}
		float total = red[gl_LocalInvocationID.x - LANE];
		barrier();
		bool leader = LANE == 0u;
#endif
		uint tok = t0 + t;
		if (leader && row < p.N && tok < p.T) {
			uint idx = p.y_off + tok * p.y_stride + p.row_base + row;
			if (p.accumulate != 0u) {
				precise float sum = y[idx] + total;
				y[idx] = sum;
			} else {
				y[idx] = total;
			}
		}
	}
}
