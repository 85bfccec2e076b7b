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
//
// Fused output norm (NORMQ, constant 4, = 1: the q8_gemv_norm kernels; one token, TOKENS = 1):
// instead of reading rmsnorm_quant's int8 activations and their (1/s, Σq) pair, each workgroup
// computes them from the token's f32 input x (binding 2, D floats) and the output norm's weight
// nw (binding 3) with norm_quant.glsl — the code rmsnorm_quant runs, in the same order, as
// ternary_matmul.comp's NORMQ prologue does — into shared memory (D <= NORM_MAX_K): the decode
// step's output norm needs no dispatch of its own.
//
// Fused argmax (ARGMAX, constant 5, = 1: the q8_gemv*_argmax kernels of the greedy step; one
// token): the logits are not written. Each workgroup reduces its rows' logits (the same bits as
// above) to one candidate of argmax.glsl — the largest, NaNs skipped, the lowest row on ties —
// and writes it as the pair (key, row) at pair y_off + (workgroup) of binding 4 (row 0xffffffff:
// none); argmax.comp's argmax_reduce turns the pairs of every chunk's workgroups into the token.
// NORMQ and ARGMAX are specialization constants: each variant's one module serves the five
// kernels (q8_gemv, q8_gemm, q8_gemv_norm, q8_gemv_argmax, q8_gemv_norm_argmax).
//
// Rows a workgroup (runtime.headRows): 8 row groups of 32 invocations; a GEMV workgroup (TOKENS
// = 1) takes ITERS = 16 rows per row group in turn, 128 rows, so the workgroups that each compute
// the fused norm for themselves are 1,002 for 2B4T's 128,256-row head instead of 16,032 (each
// reads the 2560-float input and norm weight; 16 rows in turn still leave 8,016 row groups' loads
// in flight); a GEMM workgroup takes 8 rows.
#extension GL_GOOGLE_include_directive : require
#if USE_DOT
#extension GL_EXT_spirv_intrinsics : require
#endif
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif
#include "common.glsl"
#include "numerics.glsl"
#define AM_HEAD_GROUPS (gl_WorkGroupSize.x / 32u)
#include "argmax.glsl"

layout(constant_id = 3) const uint TOKENS = 1;
layout(constant_id = 4) const uint NORMQ = 0;  // 1: the fused output norm (see the header)
layout(constant_id = 5) const uint ARGMAX = 0; // 1: argmax candidates instead of logits

layout(set = 0, binding = 0) readonly buffer Wq { uvec4 wq[]; };
layout(set = 0, binding = 1) readonly buffer Wd { uint wd[]; };
layout(set = 0, binding = 2) readonly buffer A { uvec4 a[]; };
layout(set = 0, binding = 2) readonly buffer X { float xin[]; }; // NORMQ: the token's input [D]
layout(set = 0, binding = 3) readonly buffer S { uint sq[]; }; // [token][2]: 1/s bits, Σq (unused)
layout(set = 0, binding = 3) readonly buffer NW { float nw[]; }; // NORMQ: the norm weight [D]
layout(set = 0, binding = 4) buffer Y { float y[]; };
layout(set = 0, binding = 4) buffer Part { uint part[]; }; // ARGMAX: (key, row) pairs

layout(push_constant) uniform Push {
	uint D;        // columns (multiple of 32)
	uint N;        // rows in this chunk
	uint T;        // tokens
	uint a_off;    // first uvec4 of token 0 in a; tokens are D/16 uvec4 apart
	uint s_off;    // first token slot in sq
	uint y_off;    // first float of token 0 in y
	uint y_stride; // floats between tokens in y
	uint row_base; // output index of the chunk's first row
	float eps;     // NORMQ: the RMSNorm epsilon
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
const uint ITERS = TOKENS == 1u ? 16u : 1u; // rows per row group (header)
shared float red[gl_WorkGroupSize.x];

const uint NORM_MAX_K = 8192u; // widest fused input (runtime.NormFuseMaxCols)
shared uint qsh[NORMQ * (NORM_MAX_K / 4u - 1u) + 1u]; // NORMQ: the int8 activations, four a word
#define NQ_X(i) (xin[(i)])
#define NQ_W(i) (nw[(i)])
#define NQ_QSH qsh
#include "norm_quant.glsl"
float nq_inv_s; // NORMQ: cr_rcp(s), what rmsnorm_quant writes as the pair's first word

// normPrologue quantizes the normed input into qsh and sets nq_inv_s (Σq: the head does not use
// it); every invocation of the workgroup calls it.
void normPrologue() {
	int qsum;
	nq_inv_s = nq_prologue(p.D, p.eps, qsum);
}

// act returns the 16 int8 activations of columns 16q .. 16q+15 of token tok.
uvec4 act(uint tok, uint q) {
	if (NORMQ != 0u) return uvec4(qsh[4u * q], qsh[4u * q + 1u], qsh[4u * q + 2u], qsh[4u * q + 3u]);
	return a[p.a_off + tok * (p.D / 16u) + q];
}

// invScale returns token tok's dequantization factor cr_rcp(s).
float invScale(uint tok) {
	if (NORMQ != 0u) return nq_inv_s;
	return uintBitsToFloat(sq[2u * (p.s_off + tok)]);
}


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
	uint t0 = gl_WorkGroupID.y * TOKENS;
	uint blocks = p.D / 32u;
	uint quads = p.D / 16u; // uvec4 per row and per token
	if (NORMQ != 0u) normPrologue();
	uvec2 best = uvec2(0u, AM_NONE); // ARGMAX: the best of this row group's rows so far (lane 0)
	for (uint it = 0u; it < ITERS; it++) { // the same count in every invocation: tree_sum's barriers
		uint row = (gl_WorkGroupID.x * ITERS + it) * ROWS_PER_GROUP + idx / LANES;
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
						int idot = dot16(act(t0 + t, 2u * b), w0) + dot16(act(t0 + t, 2u * b + 1u), w1);
						precise float term = float(idot) * d;
						acc[t] = acc[t] + term;
					}
				}
			}
		}
		for (uint t = 0; t < TOKENS; t++) {
			float total = tree_sum(acc[t], idx);
			uint tok = t0 + t;
			if (ARGMAX != 0u) { // one token: fold the row into the row group's candidate
				if (lane == 0u) {
					precise float v = total * invScale(tok);
					uvec2 c = am_candidate(v, row < p.N, p.row_base + row);
					if (am_better(c.x, c.y, best.x, best.y)) best = c;
				}
			} else if (lane == 0u && row < p.N && tok < p.T) {
				precise float v = total * invScale(tok);
				y[p.y_off + tok * p.y_stride + p.row_base + row] = v;
			}
		}
	}
	if (ARGMAX != 0u) { // the workgroup's candidate: the best of its row groups'
		uvec2 wg = am_head_best(lane == 0u, idx / LANES, best, idx == 0u);
		if (idx == 0u) {
			part[2u * (p.y_off + gl_WorkGroupID.x)] = wg.x;
			part[2u * (p.y_off + gl_WorkGroupID.x) + 1u] = wg.y;
		}
	}
}
