#version 450
// Ternary matmul, W2A8 (BitNet b1.58 BitLinear): for tokens t and output rows r,
//   acc[t][r] = Σ_j trit[r][j] * q[t][j]              (exact int32)
//   y[t][r]   = ((float(acc) * wscale) * inv_s[t]) * oscale   (y += ... when accumulate != 0:
//                                                             the fused residual)
// with q the int8 activations of rmsnorm_quant, inv_s = cr_rcp(s) their dequantization factor and
// oscale the model's separate output scale (`*.scale` tensors of the `bitnet` architecture; 1.0,
// an exact no-op, otherwise): cpuref's BitLinear arithmetic, bit for bit. One subgroup (or, without
// subgroup arithmetic, one group of 32 invocations) per output row; its lanes stride over the row.
// TOKENS (constant 3) tokens share each weight word read: 1 for decode (GEMV), 8 for prefill (GEMM).
//
// Weight layout (bitgpu's GPU repacking of I2_S / TQ2_0 / TQ1_0, done at load): row-major, K/16
// uint32 words per row; bits [2s+8b, 2s+8b+1] of word w hold code = trit + 1 (0, 1, 2) of column
// 16w + 4s + b. So (word >> 2s) & 0x03030303 is four codes as bytes, matching the four int8
// activations of columns 16w+4s .. 16w+4s+3 packed in one uint32 — one packed 4x8 dot product —
// and Σ trit*q = Σ code*q - Σ q, where Σq per token comes from rmsnorm_quant.
//
// Per-block weight scales (TQ1_0/TQ2_0 tensors whose 256-column blocks carry different scales,
// blocks_off != 0): the per-(row, block) f32 scales sit in wt[] from word blocks_off on, K/256 a
// row, and the row is computed block by block in cpuref.TernaryMatMul's order: each block's exact
// int32 Σ trit*q (Σ code*q - Σ q over the block), added in int32 while the next block's scale
// equals this one (a run), then term = float(run) * scale, y = term for the first run and
// y = y + term for each later run in column order, and finally ((y * inv_s) * oscale).
//
// Variants: USE_DOT=1 uses OpSDot (SPV_KHR_integer_dot_product, through GL_EXT_spirv_intrinsics
// because glslc 2023.2 lacks GL_EXT_integer_dot_product); USE_DOT=0 unpacks bytes.
// USE_SUBGROUP=1 reduces with subgroupAdd; USE_SUBGROUP=0 with shared memory.
#extension GL_GOOGLE_include_directive : require
#if USE_DOT
#extension GL_EXT_spirv_intrinsics : require
#endif
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#include "common.glsl"

layout(constant_id = 3) const uint TOKENS = 1;

layout(set = 0, binding = 0) readonly buffer Wt { uint wt[]; };
layout(set = 0, binding = 1) readonly buffer A { uvec4 a[]; };
layout(set = 0, binding = 2) readonly buffer S { uint sq[]; }; // [token][2]: 1/s bits, Σq
layout(set = 0, binding = 3) buffer Y { float y[]; };

layout(push_constant) uniform Push {
	uint K;        // columns (multiple of 16)
	uint N;        // rows
	uint T;        // tokens
	uint a_off;    // first uvec4 of token 0 in a; tokens are K/16 uvec4 apart
	uint s_off;    // first token slot in sq
	uint y_off;    // first float of token 0 in y
	uint y_stride; // floats between tokens in y
	float wscale;  // per-tensor weight scale
	uint accumulate;
	float oscale;  // separate output scale, 1.0 when the model has none
	uint blocks_off; // 0: one scale (wscale); else the word of wt where per-block scales start
} p;

#if USE_DOT
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6018, 6019], id = 4450)
int sdot4x8(uint a, uint b, spirv_literal int fmt);
int dot4(uint act, uint codes) { return sdot4x8(act, codes, 0); }
#else
int dot4(uint act, uint codes) {
	int s = 0;
	for (int b = 0; b < 4; b++) {
		s += bitfieldExtract(int(act), 8 * b, 8) * int((codes >> (8 * b)) & 3u);
	}
	return s;
}
#endif

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
shared int red[gl_WorkGroupSize.x];
#endif

// rowSum returns the sum of v over the 32 (or subgroup-size) invocations of this row; every
// invocation of the workgroup must call it (the shared variant has barriers).
int rowSum(int v) {
#if USE_SUBGROUP
	return subgroupAdd(v);
#else
	red[gl_LocalInvocationID.x] = v;
	barrier();
	for (uint s = 16u; s > 0u; s >>= 1) {
		if (LANE < s) red[gl_LocalInvocationID.x] += red[gl_LocalInvocationID.x + s];
		barrier();
	}
	int total = red[gl_LocalInvocationID.x - LANE];
	barrier();
	return total;
#endif
}

// blockMain is main for per-block scales (p.blocks_off != 0; see the header).
void blockMain(uint row, uint t0, uint words) {
	uint G = p.K / 256u;
	int run[TOKENS];
	float yv[TOKENS];
	for (uint t = 0; t < TOKENS; t++) {
		run[t] = 0;
		yv[t] = 0.0;
	}
	bool begun = false;
	uint sbase = p.blocks_off + min(row, p.N - 1u) * G;
	for (uint g = 0; g < G; g++) {
		int part[TOKENS];
		for (uint t = 0; t < TOKENS; t++) part[t] = 0;
		if (row < p.N) {
			for (uint w = g * 16u + LANE; w < g * 16u + 16u; w += LANES) {
				uint code = wt[row * words + w];
				uint c0 = code & 0x03030303u;
				uint c1 = (code >> 2) & 0x03030303u;
				uint c2 = (code >> 4) & 0x03030303u;
				uint c3 = (code >> 6) & 0x03030303u;
				for (uint t = 0; t < TOKENS; t++) {
					if (t0 + t < p.T) {
						uvec4 av = a[p.a_off + (t0 + t) * words + w];
						part[t] += dot4(av.x, c0) + dot4(av.y, c1) + dot4(av.z, c2) + dot4(av.w, c3);
						part[t] -= dot4(av.x, 0x01010101u) + dot4(av.y, 0x01010101u) + dot4(av.z, 0x01010101u) + dot4(av.w, 0x01010101u);
					}
				}
			}
		}
		float sc = uintBitsToFloat(wt[sbase + g]);
		bool more = g + 1u < G && uintBitsToFloat(wt[sbase + g + 1u]) == sc;
		for (uint t = 0; t < TOKENS; t++) {
			run[t] += rowSum(part[t]);
			if (!more) {
				precise float term = float(run[t]) * sc;
				if (begun) {
					precise float sum = yv[t] + term;
					yv[t] = sum;
				} else {
					yv[t] = term;
				}
				run[t] = 0;
			}
		}
		if (!more) begun = true;
	}
#if USE_SUBGROUP
	bool leader = subgroupElect();
#else
	bool leader = LANE == 0u;
#endif
	for (uint t = 0; t < TOKENS; t++) {
		uint tok = t0 + t;
		if (leader && row < p.N && tok < p.T) {
			float inv_s = uintBitsToFloat(sq[2 * (p.s_off + tok)]);
			precise float v = yv[t] * inv_s * p.oscale; // cpuref's order
			uint idx = p.y_off + tok * p.y_stride + row;
			if (p.accumulate != 0u) {
				precise float sum = y[idx] + v;
				y[idx] = sum;
			} else {
				y[idx] = v;
			}
		}
	}
}

void main() {
	uint row = gl_WorkGroupID.x * ROWS_PER_GROUP + ROW_IN_GROUP;
	uint t0 = gl_WorkGroupID.y * TOKENS;
	uint words = p.K / 16u;
	if (p.blocks_off != 0u) {
		blockMain(row, t0, words);
		return;
	}
	int acc[TOKENS];
	for (uint t = 0; t < TOKENS; t++) acc[t] = 0;
	if (row < p.N) {
		uint wbase = row * words;
		for (uint w = LANE; w < words; w += LANES) {
			uint code = wt[wbase + w];
			uint c0 = code & 0x03030303u;
			uint c1 = (code >> 2) & 0x03030303u;
			uint c2 = (code >> 4) & 0x03030303u;
			uint c3 = (code >> 6) & 0x03030303u;
			for (uint t = 0; t < TOKENS; t++) {
				if (t0 + t < p.T) {
					uvec4 av = a[p.a_off + (t0 + t) * words + w];
					acc[t] += dot4(av.x, c0) + dot4(av.y, c1) + dot4(av.z, c2) + dot4(av.w, c3);
				}
			}
		}
	}
	for (uint t = 0; t < TOKENS; t++) {
#if USE_SUBGROUP
		int total = subgroupAdd(acc[t]);
		bool leader = subgroupElect();
#else
		red[gl_LocalInvocationID.x] = acc[t];
		barrier();
		for (uint s = 16u; s > 0u; s >>= 1) {
			if (LANE < s) red[gl_LocalInvocationID.x] += red[gl_LocalInvocationID.x + s];
			barrier();
		}
		int total = red[gl_LocalInvocationID.x - LANE];
		barrier();
		bool leader = LANE == 0u;
#endif
		uint tok = t0 + t;
		if (leader && row < p.N && tok < p.T) {
			float inv_s = uintBitsToFloat(sq[2 * (p.s_off + tok)]);
			int qsum = int(sq[2 * (p.s_off + tok) + 1]);
			precise float v = float(total - qsum) * p.wscale * inv_s * p.oscale; // cpuref's order
			uint idx = p.y_off + tok * p.y_stride + row;
			if (p.accumulate != 0u) {
				precise float sum = y[idx] + v;
				y[idx] = sum;
			} else {
				y[idx] = v;
			}
		}
	}
}
