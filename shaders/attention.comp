#version 450
// attention: fused causal multi-head attention with grouped-query KV heads over an f16 KV cache,
// FlashAttention-style (Dao et al. 2022, "FlashAttention"; Dao 2023, "FlashAttention-2"): a
// workgroup owns ROWS query rows of one KV head and streams that head's keys and values through
// shared memory in tiles of BC keys, keeping a running maximum m, a running sum l and the
// unnormalized output of each row in registers (online softmax, one pass, no score matrix in
// memory). With p.splits > 1 the key range is cut into p.splits chunks, one per z workgroup
// (flash-decoding, Dao et al. 2023), and each chunk writes its partial (unnormalized O, m, l) for
// attention_merge.comp to combine.
//
// Layouts (all row-major):
//   q     f32 [T][H][HD]                    query t sits at position pos0 + t
//   k, v  f16 pairs in uint32 words [ctx][KVH][HD/2] (packHalf2x16: even dim in the low half)
//   out   splits == 1: f32 [T][H][HD], the normalized attention output
//         splits  > 1: f32 [splits][T][H][HD] unnormalized partial outputs (not written when
//                      l = 0), then from vec4 index p.ml_off one (m, l, 0, 0) per [splits][T][H]
// pos0 is step slot p.pos_slot, so a recorded decode step can be replayed at a growing position.
//
// Rows: the workgroup (x, y, z) takes rows x*ROWS .. x*ROWS+ROWS-1 of KV head y, where row
// r = t*G + j is token t and query head y*G + j (G = H/KVH), so the G query heads that share a KV
// head share each K/V tile. Row r attends keys 0 .. min(pos0+t+1, ctx)-1 (causal); the tile loop
// runs over the keys the workgroup's last row may see, within its split's chunk.
//
// Threads: thread (r, lane) = (tid / TPR, tid % TPR), TPR = local_size_x / ROWS. For scores it
// computes full dot products of row r with keys lane + i*TPR of the tile (i < BC/TPR); for the
// output it owns the octets (8 consecutive dimensions) lane + i*TPR of row r (i < NO). Every
// thread of a row reads the row's scores from shared memory and recomputes the same running max
// and sum, so they agree without a reduction. Memory is moved in 16-byte vectors (8 halves of K
// or V, 4 floats of q), which halves shared-memory instructions on GPUs and matters even more on
// CPU drivers, where each shared access with a per-lane address is a gather. Only shared memory
// is used (no subgroup operations), so one variant serves every Vulkan 1.1 device.
//
// Scores are (q . k) * p.scale with p.scale = 1/sqrt(HD) rounded to f32; softmax in f32 with
// max subtraction. Masked keys get the score NEG and are skipped, so no infinities are formed.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 3) const uint HD = 128;  // head dimension, a multiple of 8
layout(constant_id = 4) const uint ROWS = 16; // query rows per workgroup (divides local_size_x)
layout(constant_id = 5) const uint BC = 32;   // keys per tile (a multiple of 4 and of TPR)

const uint WG = gl_WorkGroupSize.x;
const uint TPR = WG / ROWS;              // threads per row
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

layout(push_constant) uniform Push {
	uint T;        // query tokens
	uint H;        // query heads
	uint KVH;      // KV heads (divides H)
	uint ctx;      // positions the caches hold
	uint splits;   // key-range splits (workgroups in z)
	uint pos_slot; // step slot holding pos0
	float scale;   // 1/sqrt(HD)
	uint ml_off;   // splits > 1: vec4 index of the (m, l, 0, 0) records in o
} p;

shared vec4 sq[ROWS * QS];   // the workgroup's query rows
shared uvec4 sk[BC * KS];    // K tile, 8 halves per entry
shared uvec4 sv[BC * OCTS];  // V tile
shared vec4 ss[ROWS * BC4];  // scores of the tile (NEG where masked)

vec4 lo4(uvec4 w) { return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y)); }
vec4 hi4(uvec4 w) { return vec4(unpackHalf2x16(w.z), unpackHalf2x16(w.w)); }

void main() {
	uint tid = gl_LocalInvocationID.x;
	uint r = tid / TPR;
	uint lane = tid % TPR;
	uint G = p.H / p.KVH;
	uint nrows = p.T * G;
	uint g = gl_WorkGroupID.y;
	uint split = gl_WorkGroupID.z;
	uint row0 = gl_WorkGroupID.x * ROWS;
	uint pos0 = step_value(p.pos_slot);

	uint row = row0 + r;
	bool valid = row < nrows;
	uint t = row / G;
	uint h = g * G + row % G;
	uint lim = valid ? min(pos0 + t + 1, p.ctx) : 0; // keys row r may see

	// Keys any row of the workgroup may see, and this split's chunk of them (a multiple of BC,
	// so tiles start aligned; a chunk past the end is empty and writes a neutral partial).
	uint last = min(row0 + ROWS, nrows) - 1;
	uint kv_len = min(pos0 + last / G + 1, p.ctx);
	uint chunk = ((kv_len + p.splits - 1) / p.splits + BC - 1) / BC * BC;
	uint k_begin = min(split * chunk, kv_len);
	uint k_end = min(k_begin + chunk, kv_len);

	if (k_begin < k_end) { // an empty split only writes its neutral partial
		for (uint i = tid; i < ROWS * QV; i += WG) {
			uint rr = i / QV;
			uint w = i % QV;
			uint rw = row0 + rr;
			vec4 x = vec4(0.0);
			if (rw < nrows) {
				x = q[((rw / G) * p.H + g * G + rw % G) * QV + w];
			}
			sq[rr * QS + w] = x;
		}
	}

	float m = NEG;      // running max of the row's scores
	float l = 0.0;      // running sum of exp(score - m)
	vec4 acc[2 * NO];   // running sum of exp(score - m) * v over octets lane + i*TPR
	for (uint i = 0; i < 2 * NO; i++) {
		acc[i] = vec4(0.0);
	}

	for (uint k0 = k_begin; k0 < k_end; k0 += BC) {
		barrier(); // the previous tile's readers are done (and the query rows are stored)
		for (uint i = tid; i < BC * OCTS; i += WG) {
			uint c = i / OCTS;
			uint w = i % OCTS;
			uint key = k0 + c;
			uvec4 kw = uvec4(0);
			uvec4 vw = uvec4(0); // keys past the chunk load zeros, never cache garbage
			if (key < k_end) {
				uint a = (key * p.KVH + g) * OCTS + w;
				kw = kc[a];
				vw = vc[a];
			}
			sk[c * KS + w] = kw;
			sv[c * OCTS + w] = vw;
		}
		barrier();

		float s[NK];
		for (uint i = 0; i < NK; i++) {
			s[i] = 0.0;
		}
		for (uint w = 0; w < OCTS; w++) {
			vec4 qa = sq[r * QS + 2 * w];
			vec4 qb = sq[r * QS + 2 * w + 1];
			for (uint i = 0; i < NK; i++) {
				uvec4 kw = sk[(lane + i * TPR) * KS + w];
				s[i] += dot(qa, lo4(kw)) + dot(qb, hi4(kw));
			}
		}
		uint klim = min(lim, k_end);
		for (uint i = 0; i < NK; i++) {
			uint c = lane + i * TPR;
			ss[r * BC4 + c / 4][c % 4] = k0 + c < klim ? s[i] * p.scale : NEG;
		}
		barrier();

		float tmax = NEG;
		for (uint c4 = 0; c4 < BC4; c4++) {
			vec4 x = ss[r * BC4 + c4];
			tmax = max(tmax, max(max(x.x, x.y), max(x.z, x.w)));
		}
		if (tmax > m) {
			// Rescale what was accumulated against the old maximum (nothing on the first tile).
			float alpha = m == NEG ? 0.0 : exp(m - tmax);
			l *= alpha;
			for (uint i = 0; i < 2 * NO; i++) {
				acc[i] *= alpha;
			}
			m = tmax;
		}
		for (uint c4 = 0; c4 < BC4; c4++) {
			vec4 x = ss[r * BC4 + c4];
			for (uint j = 0; j < 4; j++) {
				if (x[j] != NEG) {
					float e = exp(x[j] - m);
					l += e;
					uint c = 4 * c4 + j;
					for (uint i = 0; i < NO; i++) {
						uint w = lane + i * TPR;
						if (w < OCTS) {
							uvec4 vw = sv[c * OCTS + w];
							acc[2 * i] += e * lo4(vw);
							acc[2 * i + 1] += e * hi4(vw);
						}
					}
				}
			}
		}
	}

	if (!valid) {
		return;
	}
	uint orow = t * p.H + h;
	if (p.splits == 1) {
		for (uint i = 0; i < NO; i++) {
			uint w = lane + i * TPR;
			if (w < OCTS) {
				o[orow * QV + 2 * w] = acc[2 * i] / l;
				o[orow * QV + 2 * w + 1] = acc[2 * i + 1] / l;
			}
		}
	} else {
		uint prow = split * p.T * p.H + orow;
		for (uint i = 0; i < NO; i++) {
			uint w = lane + i * TPR;
			if (w < OCTS && l > 0.0) { // the merge skips a split with l = 0 without reading it
				o[prow * QV + 2 * w] = acc[2 * i];
				o[prow * QV + 2 * w + 1] = acc[2 * i + 1];
			}
		}
		if (lane == 0) {
			o[p.ml_off + prow] = vec4(m, l, 0.0, 0.0);
		}
	}
}
