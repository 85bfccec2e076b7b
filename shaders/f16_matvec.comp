#version 450
// F16 matrix times f32 vectors: y[t][r] = x[t] · E[r] for rows r of an F16 matrix stored as
// uint32 words of two halves (row-major, D/2 words per row; unpackHalf2x16 is exact, so no fp16
// arithmetic or 16-bit storage is needed). The tied-embedding logits of BitNet b1.58 2B4T and the
// full-precision GEMV baseline of `bitgpu bench`. TOKENS (constant 3) tokens share each matrix
// word read. A matrix larger than one storage-buffer binding is processed in row chunks, one
// dispatch each (row_base offsets the output).
//
// The dot product is cpuref.Logits' canonical one, bit for bit: 32 lanes per row; lane l adds
// (x[2w]*e[2w] + x[2w+1]*e[2w+1]) for words w = l, l+32, ... in order; the 32 partials meet in the
// tree s = 16 .. 1 (partial[l] += partial[l+s]). The subgroup variant numbers invocations
// subgroup by subgroup (gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID) and runs the
// tree steps with s < gl_SubgroupSize as a subgroupShuffleXor butterfly (lane l < s then adds lane
// l+s: the same operands in the same order) and the larger steps through shared memory; the
// shared variant runs every step through shared memory. Every float is `precise`: no fused
// multiply-add.
//
// Fused argmax (ARGMAX, constant 4, = 1: the f16_gemv_argmax kernel of the greedy step with the
// F16 head; one token, no accumulation): the logits are not written. Each workgroup reduces its
// rows' values (the same bits as above) to one candidate of argmax.glsl — the largest, NaNs
// skipped, the lowest row on ties — and writes it as the pair (key, row) at pair y_off +
// (workgroup) of binding 2 (row 0xffffffff: none); argmax.comp's argmax_reduce turns the pairs of
// every chunk's workgroups into the token.
#extension GL_GOOGLE_include_directive : require
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif
#include "common.glsl"
#define AM_HEAD_GROUPS (gl_WorkGroupSize.x / 32u)
#include "argmax.glsl"

layout(constant_id = 3) const uint TOKENS = 1;
layout(constant_id = 4) const uint ARGMAX = 0; // 1: argmax candidates instead of outputs

layout(set = 0, binding = 0) readonly buffer E { uint e[]; };
layout(set = 0, binding = 1) readonly buffer X { float x[]; };
layout(set = 0, binding = 2) buffer Y { float y[]; };
layout(set = 0, binding = 2) buffer Part { uint part[]; }; // ARGMAX: (key, row) pairs

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

const uint LANES = 32;
const uint ROWS_PER_GROUP = gl_WorkGroupSize.x / LANES;
shared float red[gl_WorkGroupSize.x];

// inv_index numbers the workgroup's invocations so that each subgroup holds consecutive numbers
// (in the subgroup variant); rows are the numbers 32r .. 32r+31.
uint inv_index() {
#if USE_SUBGROUP
	return gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
#else
	return gl_LocalInvocationID.x;
#endif
}

// tree_sum returns, in lane 0 of each row, the canonical tree sum of the row's 32 partials v.
// Called in uniform control flow (it uses barriers).
float tree_sum(float v, uint idx) {
	precise float acc = v;
	uint lane = idx % LANES;
	for (uint s = LANES / 2u; s > 0u; s >>= 1) {
#if USE_SUBGROUP
		if (s < gl_SubgroupSize) {
			acc = acc + subgroupShuffleXor(acc, s);
			continue;
		}
#endif
		red[idx] = acc;
		barrier();
		if (lane < s) {
			acc = acc + red[idx + s];
		}
		barrier();
	}
	return acc;
}

void main() {
	uint idx = inv_index();
	uint lane = idx % LANES;
	uint row = gl_WorkGroupID.x * ROWS_PER_GROUP + idx / LANES;
	uint t0 = gl_WorkGroupID.y * TOKENS;
	uint words = p.D / 2u;
	precise float acc[TOKENS];
	for (uint t = 0; t < TOKENS; t++) acc[t] = 0.0;
	if (row < p.N) {
		uint base = row * words;
		for (uint w = lane; w < words; w += LANES) {
			vec2 ev = unpackHalf2x16(e[base + w]);
			for (uint t = 0; t < TOKENS; t++) {
				if (t0 + t < p.T) {
					uint xi = p.x_off + (t0 + t) * p.D + 2u * w;
					acc[t] = acc[t] + (x[xi] * ev.x + x[xi + 1u] * ev.y);
				}
			}
		}
	}
	for (uint t = 0; t < TOKENS; t++) {
		float total = tree_sum(acc[t], idx);
		uint tok = t0 + t;
		if (ARGMAX != 0u) { // one token: the workgroup's candidate
			uvec2 wg = am_head_best(lane == 0u, idx / LANES, am_candidate(total, row < p.N, p.row_base + row), idx == 0u);
			if (idx == 0u) {
				part[2u * (p.y_off + gl_WorkGroupID.x)] = wg.x;
				part[2u * (p.y_off + gl_WorkGroupID.x) + 1u] = wg.y;
			}
		} else if (lane == 0u && row < p.N && tok < p.T) {
			uint oi = p.y_off + tok * p.y_stride + p.row_base + row;
			if (p.accumulate != 0u) {
				precise float sum = y[oi] + total;
				y[oi] = sum;
			} else {
				y[oi] = total;
			}
		}
	}
}
