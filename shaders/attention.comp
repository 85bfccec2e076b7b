#version 450
// attention: fused causal multi-head attention with grouped-query KV heads over an f16 KV cache,
// FlashAttention-style (Dao et al. 2022, "FlashAttention"; Dao 2023, "FlashAttention-2"), in the
// canonical arithmetic of cpuref.Attention, whose bits it reproduces exactly. A workgroup owns
// ROWS query rows of one KV head and streams that head's keys and values through shared memory in
// tiles of BC = 32 keys; a tile is exactly one chunk of cpuref.Attention (positions 32c..32c+31).
// For each tile and row it computes the chunk partial (m_c, l_c, o_c), then either folds it into
// the row's running (M, L, O) in registers (p.splits == 1: online softmax, one pass, no score
// matrix in memory) or writes it out (p.splits > 1: flash-decoding, Dao et al. 2023; workgroup z
// takes chunks z, z + splits, z + 2*splits, ... and attention_merge.comp folds the partials in
// chunk order). Both give the same bits.
//
// Layouts (all row-major):
//   q     f32 [T][H][HD]                    query t sits at position pos0 + t
//   k, v  f16 pairs in uint32 words [ctx][KVH][HD/2] (packHalf2x16: even dim in the low half)
//   out   splits == 1: f32 [T][H][HD], the normalized attention output
//         splits  > 1: f32 [chunks][T][H][HD] chunk outputs o_c, then from vec4 index p.ml_off
//                      one (m_c, l_c, 0, 0) per [chunks][T][H], chunks = ceil(ctx/32); a record
//                      is written only for a chunk the row sees (the merge reads no other)
// pos0 is step slot p.pos_slot, so a recorded decode step can be replayed at a growing position.
//
// Paged KV cache (p.paged = 1; runtime.PagedKV, the batched step of several sequences): the T
// query tokens belong to different sequences. Token t sits at position meta[t] (not pos0 + t)
// and its keys live in a pool of blocks of BC positions, [blocks][BC][KVH][HD/2] words: chunk c
// of token t is block meta[p.tbl_off + t*p.tbl_stride + c]. A tile is one chunk, so it is one
// block, read whole; the arithmetic is unchanged, only the addresses differ. A workgroup then
// takes rows of one token only (ceil(G/ROWS) workgroups per token in x), because tokens of
// different sequences share no key.
//
// Rows: the workgroup (x, y, z) takes rows x*ROWS .. x*ROWS+ROWS-1 of KV head y, where row
// r = t*G + j is token t and query head y*G + j (G = H/KVH), so the G query heads that share a KV
// head share each K/V tile. Row r sees keys 0 .. min(pos0+t+1, ctx)-1 (causal); the tile loop
// runs over the chunks the workgroup's last row sees, and a row skips a tile in which it sees no
// key (it is not folded and writes no partial).
//
// Threads: thread (r, lane) = (tid / TPR, tid % TPR), TPR = local_size_x / ROWS, a divisor of 32.
// For scores it computes the full dot products of row r with keys lane + i*TPR of the tile
// (i < BC/TPR) and their weights; for the output it owns the octets (8 consecutive dimensions)
// lane + i*TPR of row r (i < NO). Every thread of a row reads the row's scores and weights from
// shared memory and recomputes the same chunk maximum and l_c, so they agree without a
// reduction. Memory is moved in 16-byte vectors (8 halves of K or V, 4 floats of q), which
// halves shared-memory instructions on GPUs and matters even more on CPU drivers, where each
// shared access with a per-lane address is a gather. Only shared memory is used (no subgroup
// operations), so one variant serves every Vulkan 1.1 device.
//
// Arithmetic (cpuref.Attention's steps; every float on this path is `precise`, so no multiply
// and add are fused, and exp and the reciprocal are numerics.glsl's):
//   score  accA += qa * lo4(k), accB += qb * hi4(k) over octets ascending (8 strided partial
//          sums), t = accA + accB, u = t.xy + t.zw, s = (u.x + u.y) * p.scale
//   chunk  m_c = max of the visible scores, p_j = cr_softmax_exp(s_j - m_c), l_c = sum of p_j
//          and o_c = sum of p_j * v_j, sequential over j ascending
//   fold   M' = max(M, m_c), a = cr_softmax_exp(M - M'), b = cr_softmax_exp(m_c - M'),
//          L = L*a + l_c*b, O = O*a + o_c*b, M = M'
//   output O * cr_rcp(L)
// Masked keys get the score NEG and the weight 0 in shared memory and are left out of every sum.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "numerics.glsl"

layout(constant_id = 3) const uint HD = 128;  // head dimension, a multiple of 8
layout(constant_id = 4) const uint ROWS = 16; // query rows per workgroup (divides local_size_x)

const uint BC = 32;                      // keys per tile: cpuref.AttentionChunk
const uint WG = gl_WorkGroupSize.x;
const uint TPR = WG / ROWS;              // threads per row, divides BC
const uint OCTS = HD / 8;                // uvec4 (8 halves) per K or V row
const uint QV = HD / 4;                  // vec4 per query row
const uint NK = BC / TPR;                // scores per thread per tile
const uint NO = (OCTS + TPR - 1) / TPR;  // output octets per thread
const uint QS = QV + 1;                  // padded row strides: rows start in different banks
const uint KS = OCTS + 1;
const uint BC4 = BC / 4;
const float NEG = -3.0e38;               // "no score": below every finite score

layout(set = 0, binding = 0) readonly buffer Q { vec4 q[]; };
layout(set = 0, binding = 1) readonly buffer K { uvec4 kc[]; };
layout(set = 0, binding = 2) readonly buffer V { uvec4 vc[]; };
layout(set = 0, binding = 3) writeonly buffer O { vec4 o[]; };
layout(set = 0, binding = 4) readonly buffer Meta { uint meta[]; }; // paged: positions, block tables

layout(push_constant) uniform Push {
	uint T;        // query tokens
	uint H;        // query heads
	uint KVH;      // KV heads (divides H)
	uint ctx;      // positions the caches hold
	uint splits;   // workgroups in z; 1 folds in registers, more write chunk partials
	uint pos_slot; // step slot holding pos0
	float scale;   // 1/sqrt(HD) rounded to f32
	uint ml_off;   // splits > 1: vec4 index of the (m_c, l_c, 0, 0) records in o
	uint paged;    // 1: paged KV cache (positions and block tables in meta), 0: contiguous
	uint tbl_off;  // paged: index in meta of token 0's block table
	uint tbl_stride; // paged: entries per block table
} p;

shared vec4 sq[ROWS * QS];   // the workgroup's query rows
shared uvec4 sk[BC * KS];    // K tile, 8 halves per entry
shared uvec4 sv[BC * OCTS];  // V tile
shared vec4 ss[ROWS * BC4];  // scores of the tile (NEG where masked)
shared vec4 sp[ROWS * BC4];  // weights p_j of the tile (0 where masked)

vec4 lo4(uvec4 w) { return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y)); }
vec4 hi4(uvec4 w) { return vec4(unpackHalf2x16(w.z), unpackHalf2x16(w.w)); }

void main() {
	uint tid = gl_LocalInvocationID.x;
	uint r = tid / TPR;
	uint lane = tid % TPR;
	uint G = p.H / p.KVH;
	uint nrows = p.T * G;
	uint g = gl_WorkGroupID.y;
	uint pos0 = step_value(p.pos_slot);
	uint row0;    // the workgroup's rows are row0 .. row_end-1
	uint row_end;
	uint t_wg = 0; // paged: the workgroup's token
	if (p.paged != 0) {
		uint tiles = (G + ROWS - 1) / ROWS; // workgroups per token
		t_wg = gl_WorkGroupID.x / tiles;
		row0 = t_wg * G + (gl_WorkGroupID.x % tiles) * ROWS;
		row_end = min(row0 + ROWS, (t_wg + 1) * G);
	} else {
		row0 = gl_WorkGroupID.x * ROWS;
		row_end = min(row0 + ROWS, nrows);
	}

	uint row = row0 + r;
	bool valid = row < row_end;
	uint t = row / G;
	uint h = g * G + row % G;
	uint tpos = p.paged != 0 ? meta[t_wg] : pos0 + t; // row r's position
	uint lim = valid ? min(tpos + 1, p.ctx) : 0; // keys row r sees

	// Keys any row of the workgroup sees; this workgroup's chunks start at chunk z.
	uint last = row_end - 1;
	uint kv_len = min((p.paged != 0 ? meta[t_wg] : pos0 + last / G) + 1, p.ctx);
	uint c_first = gl_WorkGroupID.z;
	uint tbl = p.tbl_off + t_wg * p.tbl_stride; // paged: the token's block table

	if (c_first * BC < kv_len) { // a workgroup with no chunk does nothing
		for (uint i = tid; i < ROWS * QV; i += WG) {
			uint rr = i / QV;
			uint w = i % QV;
			uint rw = row0 + rr;
			vec4 x = vec4(0.0);
			if (rw < row_end) {
				x = q[((rw / G) * p.H + g * G + rw % G) * QV + w];
			}
			sq[rr * QS + w] = x;
		}
	}

	precise float M = NEG; // running maximum of the folded chunks
	precise float L = 0.0; // running sum of weights
	precise vec4 O[2 * NO]; // running weighted sum of V over octets lane + i*TPR
	for (uint i = 0; i < 2 * NO; i++) {
		O[i] = vec4(0.0);
	}

	for (uint c = c_first; c * BC < kv_len; c += p.splits) {
		uint k0 = c * BC;
		uint k_end = min(k0 + BC, kv_len);
		uint blk = p.paged != 0 ? meta[tbl + c] : c; // the chunk's block of the cache
		barrier(); // the previous tile's readers are done (and the query rows are stored)
		for (uint i = tid; i < BC * OCTS; i += WG) {
			uint j = i / OCTS;
			uint w = i % OCTS;
			uint key = k0 + j;
			uvec4 kw = uvec4(0);
			uvec4 vw = uvec4(0); // keys past the cache's visible end load zeros, never garbage
			if (key < k_end) {
				uint a = ((blk * BC + j) * p.KVH + g) * OCTS + w;
				kw = kc[a];
				vw = vc[a];
			}
			sk[j * KS + w] = kw;
			sv[j * OCTS + w] = vw;
		}
		barrier();

		// Scores of keys lane + i*TPR: 8 strided partial sums per key, then the tree.
		precise vec4 accA[NK];
		precise vec4 accB[NK];
		for (uint i = 0; i < NK; i++) {
			accA[i] = vec4(0.0);
			accB[i] = vec4(0.0);
		}
		for (uint w = 0; w < OCTS; w++) {
			vec4 qa = sq[r * QS + 2 * w];
			vec4 qb = sq[r * QS + 2 * w + 1];
			for (uint i = 0; i < NK; i++) {
				uvec4 kw = sk[(lane + i * TPR) * KS + w];
				accA[i] += qa * lo4(kw);
				accB[i] += qb * hi4(kw);
			}
		}
		uint nvis = lim > k0 ? min(lim - k0, BC) : 0; // row r sees keys k0 .. k0+nvis-1
		precise float s[NK];
		for (uint i = 0; i < NK; i++) {
			uint j = lane + i * TPR;
			precise vec4 tv = accA[i] + accB[i];
			precise vec2 u = tv.xy + tv.zw;
			s[i] = (u.x + u.y) * p.scale;
			ss[r * BC4 + j / 4][j % 4] = j < nvis ? s[i] : NEG;
		}
		barrier();

		float m = NEG; // m_c: the maximum of the row's visible scores (exact in any order)
		for (uint c4 = 0; c4 < BC4; c4++) {
			vec4 x = ss[r * BC4 + c4];
			m = max(m, max(max(x.x, x.y), max(x.z, x.w)));
		}
		for (uint i = 0; i < NK; i++) {
			uint j = lane + i * TPR;
			precise float x = s[i] - m;
			sp[r * BC4 + j / 4][j % 4] = j < nvis ? cr_softmax_exp(x) : 0.0;
		}
		barrier();

		// A row that sees no key of this chunk folds nothing and writes no partial.
		if (nvis > 0) {
			precise float l = 0.0;  // l_c
			precise vec4 oc[2 * NO]; // o_c over the thread's octets
			for (uint i = 0; i < 2 * NO; i++) {
				oc[i] = vec4(0.0);
			}
			for (uint c4 = 0; c4 < (nvis + 3) / 4; c4++) {
				vec4 x = sp[r * BC4 + c4];
				for (uint jj = 0; jj < 4; jj++) {
					uint j = 4 * c4 + jj;
					if (j < nvis) {
						float pj = x[jj];
						l += pj;
						for (uint i = 0; i < NO; i++) {
							uint w = lane + i * TPR;
							if (w < OCTS) {
								uvec4 vw = sv[j * OCTS + w];
								oc[2 * i] += pj * lo4(vw);
								oc[2 * i + 1] += pj * hi4(vw);
							}
						}
					}
				}
			}

			if (p.splits == 1) {
				precise float mn = max(M, m);
				precise float da = M - mn;
				precise float db = m - mn;
				float a = cr_softmax_exp(da);
				float b = cr_softmax_exp(db);
				L = L * a + l * b;
				for (uint i = 0; i < 2 * NO; i++) {
					O[i] = O[i] * a + oc[i] * b;
				}
				M = mn;
			} else {
				uint prow = c * p.T * p.H + t * p.H + h; // record [c][t][h]
				for (uint i = 0; i < NO; i++) {
					uint w = lane + i * TPR;
					if (w < OCTS) {
						o[prow * QV + 2 * w] = oc[2 * i];
						o[prow * QV + 2 * w + 1] = oc[2 * i + 1];
					}
				}
				if (lane == 0) {
					o[p.ml_off + prow] = vec4(m, l, 0.0, 0.0);
				}
			}
		}
	}

	if (!valid || p.splits != 1) {
		return;
	}
	uint orow = t * p.H + h;
	float rl = cr_rcp(L);
	for (uint i = 0; i < NO; i++) {
		uint w = lane + i * TPR;
		if (w < OCTS) {
			precise vec4 y0 = O[2 * i] * rl;
			precise vec4 y1 = O[2 * i + 1] * rl;
			o[orow * QV + 2 * w] = y0;
			o[orow * QV + 2 * w + 1] = y1;
		}
	}
}
