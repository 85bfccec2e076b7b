#version 450
// Q8_0 matrix times int8 activations: the quantized LM head (`--lm-head q8_0`). For tokens t and
// rows r of a Q8_0 matrix (llama.cpp's block_q8_0: 32 int8 weights w and one f16 scale d per
// block of 32 columns) and the per-token int8 activations a of rmsnorm_quant (output_norm(x)
// quantized exactly as a BitLinear input, with inv_s = cr_rcp(s)):
//   acc_b  = Σ_{j in block b} w[r][j] * a[t][j]                (exact int32)
//   term_b = float(acc_b) * d[r][b]                               (one f32 rounding)
//   y[t][r] = tree(partial[0..31]) * inv_s[t],  partial[l] = Σ_{b ≡ l mod 32, in order} term_b
// the canonical order of cpuref.LogitsQ8, bit for bit: 32 lanes per row, lane l adds term_b for
// blocks b = l, l+32, ... in order (partial starts at 0.0), the 32 partials meet in the tree
// s = 16 .. 1 (partial[l] += partial[l+s]) — the F16 head's tree — and the sum is multiplied by
// inv_s once. The subgroup variants number invocations subgroup by subgroup and run the tree steps
// with s < gl_SubgroupSize as a subgroupShuffleXor butterfly (lane l < s then adds lane l+s: the
// same operands in the same order), larger steps through shared memory; the shared variant runs
// every step through shared memory. Every float is `precise`: no fused multiply-add.
//
// Layout (runtime.Q8Matrix, repacked from block_q8_0 at load): per row chunk one buffer of the
// int8 weights, row-major, D bytes a row (read as uvec4: a block is two uvec4), and one buffer of
// the f16 scales, row-major, D/32 a row, two per uint32 (scale i of the chunk in the low half of
// word i/2 when i is even). Activations: rmsnorm_quant's int8 quads, read as uvec4, D/16 per token.
// TOKENS (constant 3) tokens share each weight read: 1 for decode (GEMV), 8 for prefill (GEMM).
//
// Variants: USE_DOT=1 uses OpSDot (SPV_KHR_integer_dot_product, through GL_EXT_spirv_intrinsics
// because glslc 2023.2 lacks GL_EXT_integer_dot_product); USE_DOT=0 unpacks bytes.
// USE_SUBGROUP=1 runs the small tree steps as shuffles; USE_SUBGROUP=0 in shared memory.
#extension GL_GOOGLE_include_directive : require
#if USE_DOT
#extension GL_EXT_spirv_intrinsics : require
#endif
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif
#include "common.glsl"

layout(constant_id = 3) const uint TOKENS = 1;

layout(set = 0, binding = 0) readonly buffer Wq { uvec4 wq[]; };
layout(set = 0, binding = 1) readonly buffer Wd { uint wd[]; };
layout(set = 0, binding = 2) readonly buffer A { uvec4 a[]; };
layout(set = 0, binding = 3) readonly buffer S { uint sq[]; }; // [token][2]: 1/s bits, Σq (unused)
layout(set = 0, binding = 4) buffer Y { float y[]; };

layout(push_constant) uniform Push {
	uint D;        // columns (multiple of 32)
	uint N;        // rows in this chunk
	uint T;        // tokens
	uint a_off;    // first uvec4 of token 0 in a; tokens are D/16 uvec4 apart
	uint s_off;    // first token slot in sq
	uint y_off;    // first float of token 0 in y
	uint y_stride; // floats between tokens in y
	uint row_base; // output index of the chunk's first row
} p;

#if USE_DOT
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6018, 6019], id = 4450)
int sdot4x8(uint a, uint b, spirv_literal int fmt);
int dot4(uint x, uint w) { return sdot4x8(x, w, 0); }
#else
int dot4(uint x, uint w) {
	int s = 0;
	for (int b = 0; b < 4; b++) {
		s += bitfieldExtract(int(x), 8 * b, 8) * bitfieldExtract(int(w), 8 * b, 8);
	}
	return s;
}
#endif

int dot16(uvec4 x, uvec4 w) {
	return dot4(x.x, w.x) + dot4(x.y, w.y) + dot4(x.z, w.z) + dot4(x.w, w.w);
}

const uint LANES = 32;
const uint ROWS_PER_GROUP = gl_WorkGroupSize.x / LANES;
shared float red[gl_WorkGroupSize.x];

// inv_index numbers the workgroup's invocations so that each subgroup holds consecutive numbers
// (in the subgroup variants); rows are the numbers 32r .. 32r+31.
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
	uint blocks = p.D / 32u;
	uint quads = p.D / 16u; // uvec4 per row and per token
	precise float acc[TOKENS];
	for (uint t = 0; t < TOKENS; t++) acc[t] = 0.0;
	if (row < p.N) {
		for (uint b = lane; b < blocks; b += LANES) {
			uint wi = row * quads + 2u * b;
			uvec4 w0 = wq[wi];
			uvec4 w1 = wq[wi + 1u];
			uint si = row * blocks + b;
			vec2 dd = unpackHalf2x16(wd[si >> 1]);
			float d = (si & 1u) == 0u ? dd.x : dd.y;
			for (uint t = 0; t < TOKENS; t++) {
				if (t0 + t < p.T) {
					uint ai = p.a_off + (t0 + t) * quads + 2u * b;
					int idot = dot16(a[ai], w0) + dot16(a[ai + 1u], w1);
					precise float term = float(idot) * d;
					acc[t] = acc[t] + term;
				}
			}
		}
	}
	for (uint t = 0; t < TOKENS; t++) {
		float total = tree_sum(acc[t], idx);
		uint tok = t0 + t;
		if (lane == 0u && row < p.N && tok < p.T) {
			float inv_s = uintBitsToFloat(sq[2u * (p.s_off + tok)]);
			precise float v = total * inv_s;
			y[p.y_off + tok * p.y_stride + p.row_base + row] = v;
		}
	}
}
