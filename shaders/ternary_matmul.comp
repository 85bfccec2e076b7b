#version 450
// Ternary matmul, W2A8 (BitNet b1.58 BitLinear): for tokens t and output rows r,
//   acc[t][r] = Σ_j trit[r][j] * q[t][j]              (exact int32)
//   y[t][r]   = ((float(acc) * wscale) * inv_s[t]) * oscale   (y += ... when accumulate != 0:
//                                                             the fused residual)
// with q the int8 activations of rmsnorm_quant, inv_s = cr_rcp(s) their dequantization factor and
// oscale the model's separate output scale (`*.scale` tensors of the `bitnet` architecture; 1.0,
// an exact no-op, otherwise): cpuref's BitLinear arithmetic, bit for bit. One subgroup (or, without
// subgroup arithmetic, one group of 32 invocations) per output row at a time; its lanes stride
// over the row; a workgroup covers UNITS rows (constant 6, below), whatever the subgroup size.
// TOKENS (constant 3) tokens share each weight word read: 1 for decode (GEMV), 8 for prefill (GEMM).
//
// Weight layout (bitgpu's GPU repacking of I2_S / TQ2_0 / TQ1_0, done at load): row-major, K/16
// uint32 words per row; bits [2s+8b, 2s+8b+1] of word w hold code = trit + 1 (0, 1, 2) of column
// 16w + 4s + b. So (word >> 2s) & 0x03030303 is four codes as bytes, matching the four int8
// activations of columns 16w+4s .. 16w+4s+3 packed in one uint32 — one packed 4x8 dot product —
// and Σ trit*q = Σ code*q - Σ q, where Σq per token comes from rmsnorm_quant. With PACKING = 2
// (the same 2-bit layout, runtime.TernaryWeights.WideLoads) and K/16 a multiple of 4, each lane
// reads whole uvec4s of wt4 (128-bit loads, 64 weights) instead of single words; the int32 sums
// are the same. (The per-block path below reads words in both cases.)
//
// Base-3 layout (PACKING = 1, runtime.PackingBase3; K a multiple of 256; 52 bytes per 256 weights,
// ggml's TQ1_0 block without its f16 scale): per 256-column block g of a row, 3 uvec4 (j = 0..2)
// and one tail word. Byte b (0..15, byte b%4 of component b/4) of uvec4 j holds the codes c_n
// (trit+1) of columns 80j + 16n + b, n = 0..4, as TQ1_0 stores five trits (ggml-quants.c):
// byte = (q*256 + 242) / 243 with q = Σ c_n*3^(4-n), decoded as c_n = (((byte*3^n) mod 256)*3) >> 8.
// So trit n of the 16 bytes is exactly the four 2-bit code words of the 16 columns
// 80j+16n .. 80j+16n+15 (activation uvec4 16g + 5j + n), decoded two bytes at a time in 16-bit
// halves (addBase3). The tail word holds columns 240..255 in the 2-bit word layout above. For
// 16-byte alignment all rows' uvec4s come first (row r's 3*K/256 of them from uvec4 r*3*K/256 of
// wt4), then all rows' tail words (row r's K/256 from word N*12*K/256 + r*K/256 of wt), then the
// per-block scales if any (blocks_off). Rows, segments and the per-block order are unchanged:
// only the weight reads differ, and every row's int32 sums (whole row, or per 256-block) are the
// 2-bit layout's, so the outputs are the same bits.
//
// Per-block weight scales (TQ1_0/TQ2_0 tensors whose 256-column blocks carry different scales,
// blocks_off != 0): the per-(row, block) f32 scales sit in wt[] from word blocks_off on, K/256 a
// row, and the row is computed block by block in cpuref.TernaryMatMul's order: each block's exact
// int32 Σ trit*q (Σ code*q - Σ q over the block), added in int32 while the next block's scale
// equals this one (a run), then term = float(run) * scale, y = term for the first run and
// y = y + term for each later run in column order, and finally ((y * inv_s) * oscale).
//
// Stacked matrices (one dispatch for several tensors with the same input: q, k and v; gate and
// up): the rows of up to three tensors are stored one after the other, segment 0 = rows
// [0, seg1), segment 1 = [seg1, seg2), segment 2 = [seg2, N). Each segment has its own weight
// scale (wscale, wscale1, wscale2), output scale (oscale, oscale1, oscale2) and output buffer
// (y at y_off/y_stride, y1 at y_off1/y_stride1, y2 at y_off2/y_stride2), its rows numbered from
// 0 there — so every row gets exactly the arithmetic of its own tensor's dispatch. A single
// tensor is one segment (seg1 = seg2 = N). Per-block scales index the stacked rows (the host
// stores them row by row in the same order).
//
// Fused GLU (constant GLU = 1; push glu = 1: ReLU², 2: SiLU): two segments of equal rows
// interleaved, row 2i = gate row i (segment 0), row 2i+1 = up row i (segment 1), adjacent in wt.
// One subgroup (row group) computes both rows of pair i — gate, then up, each exactly as a
// plain dispatch would — and its leader writes y[y_off + t*y_stride + i] = act(gate)*up with
// glu.comp's (cpuref.ReLU2GLU / cpuref.SiLUGLU's) arithmetic: no workgroup barrier, no shared
// memory. A separate pipeline (the constant) so the plain kernel carries none of it.
//
// Fused RoPE and KV store (ROPE=1, the ternary_matmul_rope_* modules: the stacked q, k and v of
// one layer): rows come in quads, four rows of one head of one segment (q = 0, k = 1, v = 2) that
// one row group computes one after the other. Quad n of a head (head_dim/4 of them) holds its
// elements e0..e3 = i, i+1, i+half, i+half+1 (i = 2n, half = rope_dim/2) when mode is NEOX and
// 4n < rope_dim, else 4n .. 4n+3 (StackTernaryRoPE orders the rows so). For q and k in the rotary
// range the leader turns pairs (e0, e2) and (e1, e3) (NEOX: cos/sin index i and i+1) or (e0, e1)
// and (e2, e3) (NORM: index 2n and 2n+1) by the position pos0 + t (pos0 = step slot 0) with
// rope_kv.comp's (cpuref.RoPE's) f32 arithmetic, then writes q's four floats to y, or k's and v's
// as two words of f16 pairs (e0, e1), (e2, e3) into the caches kc and vc at that position
// (cpuref.StoreKV's rounding, half.glsl): no q/k/v round trip, no rope_kv dispatch. With
// p.paged (runtime.PagedKV: the batched step of several sequences) token t's position is meta[t]
// and its cache row that of rope_kv.comp's paged mode (the block pool, meta's block tables).
//
// Fused input norm (NORMQ=1, the *_norm modules; one token, TOKENS = 1): instead of reading the
// int8 activations and their (1/s, Σq) pair (bindings 1 and 2), each workgroup computes them from
// the token's f32 input x (binding 1, K floats) and the RMSNorm weight nw (binding 2) with
// norm_quant.glsl — the code rmsnorm_quant runs, in the same order, so every workgroup gets the
// standalone kernel's bits — into shared memory (K <= NORM_MAX_K), then runs the kernel above on
// them. The norm before a layer's q/k/v, o, gate/up or down GEMV (attn_norm, attn_sub_norm,
// ffn_norm, ffn_sub_norm) needs no dispatch of its own; the input is read once per workgroup, as
// the activations are anyway.
//
// Variants: USE_DOT=1 uses OpSDot (SPV_KHR_integer_dot_product, through GL_EXT_spirv_intrinsics
// because glslc 2023.2 lacks GL_EXT_integer_dot_product); USE_DOT=0 unpacks bytes.
// USE_SUBGROUP=1 reduces with subgroupAdd; USE_SUBGROUP=0 with shared memory.
#ifndef ROPE
#define ROPE 0
#endif
#ifndef NORMQ
#define NORMQ 0
#endif
#extension GL_GOOGLE_include_directive : require
#if USE_DOT
#extension GL_EXT_spirv_intrinsics : require
#endif
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#include "common.glsl"
#include "numerics.glsl"
#if ROPE
#include "half.glsl"
#endif

layout(constant_id = 3) const uint TOKENS = 1;
layout(constant_id = 4) const uint GLU = 0; // 1: each row group computes a gate/up pair (header)
#if PACKED
layout(constant_id = 5) const uint PACKING = 0; // 0 2-bit codes, 1 base-3, 2 2-bit read as uvec4s (header)
#else
// The plain modules read 2-bit words only: the base-3 and uvec4 paths are compiled out of them
// (the *_packed modules, PACKED=1, have them), which keeps them a third of the size — a software
// driver took 4x as long to compile the kernels with every path in.
const uint PACKING = 0u;
#endif
// UNITS (subgroup variants): the units — rows, GLU pairs or RoPE quads — one workgroup covers,
// chosen by the host (runtime's tuning table) and the same number its grid is sized by.
// Subgroup s of the workgroup computes units s, s + gl_NumSubgroups, ... < UNITS, each with its
// lanes striding over the row: the mapping holds whatever subgroup size the driver picks for
// the pipeline (devices may vary it; the host never assumes the size it was told), and a UNITS
// above the subgroup count gives a subgroup several units in turn. The shared-memory variants
// keep 32 invocations a unit and 8 units a workgroup.
layout(constant_id = 6) const uint UNITS = 8;
// UNIT_LOOP = 0 (set by the host only where the device's subgroup size is fixed and UNITS is one
// unit a subgroup of it: runtime.Kernels.unitLoop) runs each subgroup's one unit without the
// loop; the loop cost lavapipe 16 % of the built-in model's decode speed (158 vs 133 tok/s).
layout(constant_id = 7) const uint UNIT_LOOP = 1;

layout(set = 0, binding = 0) readonly buffer Wt { uint wt[]; };
layout(set = 0, binding = 0) readonly buffer Wt4 { uvec4 wt4[]; }; // the same words, 128 bits a read
#if NORMQ
layout(set = 0, binding = 1) readonly buffer X { float xin[]; }; // the token's input [K]
layout(set = 0, binding = 2) readonly buffer NW { float nw[]; }; // the RMSNorm weight [K]
#else
layout(set = 0, binding = 1) readonly buffer A { uvec4 a[]; };
layout(set = 0, binding = 2) readonly buffer S { uint sq[]; }; // [token][2]: 1/s bits, Σq
#endif
layout(set = 0, binding = 3) buffer Y { float y[]; };
layout(set = 0, binding = 4) buffer Y1 { float y1[]; };
layout(set = 0, binding = 5) buffer Y2 { float y2[]; };
#if ROPE
layout(set = 0, binding = 6) readonly buffer CS { float cs[]; }; // cos table then sin table
layout(set = 0, binding = 7) writeonly buffer KC { uint kc[]; }; // f16 pairs [ctx][kv rows / 2]
layout(set = 0, binding = 8) writeonly buffer VC { uint vc[]; };
layout(set = 0, binding = 9) readonly buffer Meta { uint meta[]; }; // paged: positions, block tables
#endif

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
	uint seg1;     // first row of segment 1 (N: none)
	uint seg2;     // first row of segment 2 (N: none)
	float wscale1, wscale2;
	float oscale1, oscale2;
	uint y_off1, y_stride1; // segment 1's outputs in y1
	uint y_off2, y_stride2; // segment 2's outputs in y2
	uint glu;      // with GLU = 1: 1 ReLU², 2 SiLU on interleaved gate/up rows (see the header)
#if ROPE
	uint head_dim; // rows of a head in every segment (multiple of 4)
	uint rope_dim; // rotated elements of a head (multiple of 4, <= head_dim)
	uint mode;     // 0 NEOX, 1 NORM
	uint ctx;      // rows of the cos/sin table and of the caches
	uint paged;    // 1: positions and block tables from meta (rope_kv.comp's paged mode)
	uint tbl_off;  // paged: index in meta of token 0's block table
	uint tbl_stride; // paged: entries per block table
#endif
#if NORMQ
	float eps;     // the RMSNorm epsilon
#endif
} p;

#if NORMQ
const uint NORM_MAX_K = 8192u; // widest fused input (runtime.NormFuseMaxCols): 8 KiB of shared q
shared uint qsh[NORM_MAX_K / 4u]; // the token's int8 activations, four a word
#define NQ_X(i) (xin[(i)])
#define NQ_W(i) (nw[(i)])
#define NQ_QSH qsh
#include "norm_quant.glsl"
float nq_inv_s; // cr_rcp(s): what rmsnorm_quant writes as the pair's first word
int nq_qsum_total; // Σq: the pair's second word

// normPrologue quantizes the normed input into qsh and sets nq_inv_s and nq_qsum_total; every
// invocation of the workgroup calls it.
void normPrologue() { nq_inv_s = nq_prologue(p.K, p.eps, nq_qsum_total); }

uvec4 actWords(uint tok, uint w) { return uvec4(qsh[4u * w], qsh[4u * w + 1u], qsh[4u * w + 2u], qsh[4u * w + 3u]); }
float invScale(uint tok) { return nq_inv_s; }
int qSum(uint tok) { return nq_qsum_total; }
#else
// actWords returns the 16 int8 activations of columns 16w .. 16w+15 of token tok.
uvec4 actWords(uint tok, uint w) { return a[p.a_off + tok * (p.K / 16u) + w]; }
// invScale returns token tok's dequantization factor cr_rcp(s).
float invScale(uint tok) { return uintBitsToFloat(sq[2 * (p.s_off + tok)]); }
// qSum returns token tok's Σq.
int qSum(uint tok) { return int(sq[2 * (p.s_off + tok) + 1]); }
#endif

// segOf returns the segment of a stacked row (see the header).
uint segOf(uint row) {
	if (GLU != 0u) return row & 1u;
	return row < p.seg1 ? 0u : (row < p.seg2 ? 1u : 2u);
}

float wscaleOf(uint seg) { return seg == 0u ? p.wscale : (seg == 1u ? p.wscale1 : p.wscale2); }
float oscaleOf(uint seg) { return seg == 0u ? p.oscale : (seg == 1u ? p.oscale1 : p.oscale2); }

// store writes (or, with accumulate, adds) v as output row of token tok of its segment.
void store(uint row, uint tok, float v) {
	uint seg = segOf(row);
	if (seg == 0u) {
		uint idx = p.y_off + tok * p.y_stride + row;
		if (p.accumulate != 0u) {
			precise float sum = y[idx] + v;
			y[idx] = sum;
		} else {
			y[idx] = v;
		}
	} else if (seg == 1u) {
		uint idx = p.y_off1 + tok * p.y_stride1 + (row - p.seg1);
		if (p.accumulate != 0u) {
			precise float sum = y1[idx] + v;
			y1[idx] = sum;
		} else {
			y1[idx] = v;
		}
	} else {
		uint idx = p.y_off2 + tok * p.y_stride2 + (row - p.seg2);
		if (p.accumulate != 0u) {
			precise float sum = y2[idx] + v;
			y2[idx] = sum;
		} else {
			y2[idx] = v;
		}
	}
}

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
#define GROUP_UNITS UNITS
#else
const uint LANES = 32;
#define LANE (gl_LocalInvocationID.x % 32u)
#define ROW_IN_GROUP (gl_LocalInvocationID.x / 32u)
#define ROWS_PER_GROUP (gl_WorkGroupSize.x / 32u)
#define GROUP_UNITS (gl_WorkGroupSize.x / 32u)
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

float vals[TOKENS]; // rowValues' results, one per token
int accs[TOKENS];   // the integer sums addCodes accumulates, one per token

// addCodes adds, for every token t0+t in range, Σ code*q over the 16 columns of activation uvec4
// w (codes: four code words, as the 2-bit layout's (word >> 2s) & 0x03030303), minus Σq over
// those columns when centered (Σ trit*q) — the integer part of the per-block path — to accs[t].
void addCodes(uint t0, uint w, uvec4 codes, bool centered) {
	for (uint t = 0; t < TOKENS; t++) {
		if (t0 + t < p.T) {
			uvec4 av = actWords(t0 + t, w);
			int s = dot4(av.x, codes.x) + dot4(av.y, codes.y) + dot4(av.z, codes.z) + dot4(av.w, codes.w);
			if (centered) {
				s -= dot4(av.x, 0x01010101u) + dot4(av.y, 0x01010101u) + dot4(av.z, 0x01010101u) + dot4(av.w, 0x01010101u);
			}
			accs[t] += s;
		}
	}
}

// codes2 returns the four code words of a 2-bit layout word (header).
uvec4 codes2(uint word) { return (uvec4(word) >> uvec4(0u, 2u, 4u, 6u)) & 0x03030303u; }

// addBase3 runs addCodes over the five code uvec4s of base-3 uvec4 q (header): trit n covers
// activation uvec4 w0 + n. Each 16-bit half holds one byte m = byte*3^n mod 256: its trit is
// (m*3) >> 8 (at most 765 before the shift: no carry into the other half), and m*3 mod 256 is
// the next trit's m.
void addBase3(uint t0, uint w0, uvec4 q, bool centered) {
	uvec4 lo = q & 0x00ff00ffu;        // bytes 0 and 2 of each word
	uvec4 hi = (q >> 8) & 0x00ff00ffu; // bytes 1 and 3
	for (uint n = 0u; n < 5u; n++) {
		uvec4 lo3 = lo * 3u;
		uvec4 hi3 = hi * 3u;
		uvec4 codes = ((lo3 >> 8) & 0x00030003u) | (((hi3 >> 8) & 0x00030003u) << 8);
		addCodes(t0, w0 + n, codes, centered);
		lo = lo3 & 0x00ff00ffu;
		hi = hi3 & 0x00ff00ffu;
	}
}

// blockDots adds to accs the integer Σ trit*q of 256-column block g of row `row` (this lane's
// part; rowSum completes it) — the per-block path (p.blocks_off != 0).
void blockDots(uint row, uint t0, uint words, uint g) {
	if (PACKING == 1u) { // 3 uvec4s and the tail word: one item a lane
		uint G = p.K / 256u;
		for (uint k = LANE; k < 4u; k += LANES) {
			if (k < 3u) {
				addBase3(t0, 16u * g + 5u * k, wt4[row * 3u * G + 3u * g + k], true);
			} else {
				addCodes(t0, 16u * g + 15u, codes2(wt[p.N * 12u * G + row * G + g]), true);
			}
		}
		return;
	}
	for (uint w = g * 16u + LANE; w < g * 16u + 16u; w += LANES) {
		addCodes(t0, w, codes2(wt[row * words + w]), true);
	}
}

// rowDots adds to accs the integer Σ code*q of row `row` (this lane's part; rowSum completes it).
void rowDots(uint row, uint t0, uint words) {
	if (PACKING == 1u) { // items: the row's 3*G uvec4s, then its G tail words
		uint G = p.K / 256u;
		for (uint i = LANE; i < 4u * G; i += LANES) {
			if (i < 3u * G) {
				uint g = i / 3u;
				addBase3(t0, 16u * g + 5u * (i - 3u * g), wt4[row * 3u * G + i], false);
			} else {
				uint g = i - 3u * G;
				addCodes(t0, 16u * g + 15u, codes2(wt[p.N * 12u * G + row * G + g]), false);
			}
		}
		return;
	}
	if (PACKING == 2u && words % 4u == 0u) { // 128-bit loads of the 2-bit layout (header)
		uint base = row * (words / 4u);
		for (uint i = LANE; i < words / 4u; i += LANES) {
			uvec4 q = wt4[base + i];
			addCodes(t0, 4u * i, codes2(q.x), false);
			addCodes(t0, 4u * i + 1u, codes2(q.y), false);
			addCodes(t0, 4u * i + 2u, codes2(q.z), false);
			addCodes(t0, 4u * i + 3u, codes2(q.w), false);
		}
		return;
	}
	uint wbase = row * words;
	for (uint w = LANE; w < words; w += LANES) {
		addCodes(t0, w, codes2(wt[wbase + w]), false);
	}
}

// blockValues is rowValues for per-block scales (p.blocks_off != 0; see the header).
void blockValues(uint row, uint t0, uint words) {
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
		for (uint t = 0; t < TOKENS; t++) accs[t] = 0;
		if (row < p.N) blockDots(row, t0, words, g);
		float sc = uintBitsToFloat(wt[sbase + g]);
		bool more = g + 1u < G && uintBitsToFloat(wt[sbase + g + 1u]) == sc;
		for (uint t = 0; t < TOKENS; t++) {
			run[t] += rowSum(accs[t]);
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
	float os = oscaleOf(segOf(row));
	for (uint t = 0; t < TOKENS; t++) {
		uint tok = t0 + t;
		vals[t] = 0.0;
		if (row < p.N && tok < p.T) {
			float inv_s = invScale(tok);
			precise float v = yv[t] * inv_s * os; // cpuref's order
			vals[t] = v;
		}
	}
}

// rowValues sets vals[t] to output row `row` of token t0 + t (where both are in range), before
// any accumulation: exactly the value a plain dispatch of the row's tensor computes. Every
// invocation of the workgroup must call it (the shared-memory reduction has barriers).
void rowValues(uint row, uint t0, uint words) {
	if (p.blocks_off != 0u) {
		blockValues(row, t0, words);
		return;
	}
	for (uint t = 0; t < TOKENS; t++) accs[t] = 0;
	if (row < p.N) rowDots(row, t0, words);
	uint seg = segOf(min(row, p.N - 1u));
	float ws = wscaleOf(seg);
	float os = oscaleOf(seg);
	for (uint t = 0; t < TOKENS; t++) {
		int total = rowSum(accs[t]);
		uint tok = t0 + t;
		vals[t] = 0.0;
		if (row < p.N && tok < p.T) {
			float inv_s = invScale(tok);
			int qsum = qSum(tok);
			precise float v = float(total - qsum) * ws * inv_s * os; // cpuref's order
			vals[t] = v;
		}
	}
}

#if ROPE
// ropeEpilogue is the leader's part of a quad (see the header): r holds its four rows' values of
// token tok, the first of them stacked row `row0`.
void ropeEpilogue(uint row0, uint tok, float r[4]) {
	uint seg = segOf(row0);
	uint local = row0 - (seg == 0u ? 0u : (seg == 1u ? p.seg1 : p.seg2));
	uint head = local / p.head_dim;
	uint n = (local % p.head_dim) / 4u;
	uint half_dim = p.rope_dim / 2u;
	bool rotated = 4u * n < p.rope_dim;
	uint e[4];
	for (uint j = 0; j < 4u; j++) {
		e[j] = p.mode == 0u && rotated ? 2u * n + (j & 1u) + (j >> 1) * half_dim : 4u * n + j;
	}
	uint pos = p.paged != 0u ? meta[tok] : step_value(0) + tok;
	uint crow = pos; // the cache row of the position
	if (p.paged != 0u) {
		crow = meta[p.tbl_off + tok * p.tbl_stride + pos / 32u] * 32u + pos % 32u;
	}
	if (seg != 2u && rotated) {
		for (uint pr = 0; pr < 2u; pr++) {
			uint ja = p.mode == 0u ? pr : 2u * pr; // NEOX (e0, e2), (e1, e3); NORM (e0, e1), (e2, e3)
			uint jb = p.mode == 0u ? pr + 2u : 2u * pr + 1u;
			uint ci = 2u * n + pr; // NEOX i + pr; NORM pair pr of quad n
			float c = cs[pos * half_dim + ci];
			float s = cs[p.ctx * half_dim + pos * half_dim + ci];
			float a = r[ja];
			float b = r[jb];
			precise float ra = a * c - b * s;
			precise float rb = a * s + b * c;
			r[ja] = ra;
			r[jb] = rb;
		}
	}
	uint base = head * p.head_dim;
	if (seg == 0u) {
		for (uint j = 0; j < 4u; j++) y[p.y_off + tok * p.y_stride + base + e[j]] = r[j];
		return;
	}
	uint dst = crow * ((p.seg2 - p.seg1) / 2u) + (base + e[0]) / 2u;
	uint dst2 = crow * ((p.seg2 - p.seg1) / 2u) + (base + e[2]) / 2u;
	uint w0 = to_half(r[0]) | (to_half(r[1]) << 16);
	uint w1 = to_half(r[2]) | (to_half(r[3]) << 16);
	if (seg == 1u) {
		kc[dst] = w0;
		kc[dst2] = w1;
	} else {
		vc[dst] = w0;
		vc[dst2] = w1;
	}
}
#endif

// unitValues computes unit `unit` (a row, GLU pair or RoPE quad; see the header) of tokens
// t0 .. t0+TOKENS-1 and has the leader store it.
void unitValues(uint unit, uint t0, uint words, bool leader) {
#if ROPE
	float quad[4][TOKENS];
	for (uint j = 0; j < 4u; j++) {
		rowValues(4u * unit + j, t0, words);
		for (uint t = 0; t < TOKENS; t++) quad[j][t] = vals[t];
	}
	for (uint t = 0; t < TOKENS; t++) {
		if (leader && 4u * unit < p.N && t0 + t < p.T) {
			float r[4] = float[4](quad[0][t], quad[1][t], quad[2][t], quad[3][t]);
			ropeEpilogue(4u * unit, t0 + t, r);
		}
	}
	return;
#endif
	if (GLU == 0u) {
		rowValues(unit, t0, words);
		for (uint t = 0; t < TOKENS; t++) {
			if (leader && unit < p.N && t0 + t < p.T) store(unit, t0 + t, vals[t]);
		}
		return;
	}
	float gate[TOKENS];
	rowValues(2u * unit, t0, words);
	for (uint t = 0; t < TOKENS; t++) gate[t] = vals[t];
	rowValues(2u * unit + 1u, t0, words);
	for (uint t = 0; t < TOKENS; t++) {
		uint tok = t0 + t;
		if (leader && 2u * unit < p.N && tok < p.T) {
			float gv = gate[t];
			float u = vals[t];
			float out_v;
			if (p.glu == 1u) { // glu.comp's ReLU²
				float r = max(gv, 0.0);
				precise float o = r * r * u;
				out_v = o;
			} else { // glu.comp's SiLU
				precise float den = 1.0 + cr_exp(min(-gv, 60.0));
				precise float o = gv * cr_rcp(den) * u;
				out_v = o;
			}
			y[p.y_off + tok * p.y_stride + unit] = out_v;
		}
	}
}

void main() {
	uint t0 = gl_WorkGroupID.y * TOKENS;
	uint words = p.K / 16u;
#if USE_SUBGROUP
	bool leader = subgroupElect();
#else
	bool leader = LANE == 0u;
#endif
#if NORMQ
	normPrologue();
#endif
	if (UNIT_LOOP == 0u) { // one unit a subgroup, of the size the host was told (see UNIT_LOOP)
		unitValues(gl_WorkGroupID.x * GROUP_UNITS + ROW_IN_GROUP, t0, words, leader);
		return;
	}
	// Every invocation of a subgroup (shared variants: of the workgroup) runs the same number of
	// iterations, as rowSum needs.
	for (uint u = ROW_IN_GROUP; u < GROUP_UNITS; u += ROWS_PER_GROUP) {
		unitValues(gl_WorkGroupID.x * GROUP_UNITS + u, t0, words, leader);
	}
}
