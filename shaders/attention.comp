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
//         splits  > 1: f32 [splits][T][H][HD] unnormalized partial outputs, then at vec2 index
//                      p.ml_off the pairs (m, l) [splits][T][H]
// pos0 is step slot p.pos_slot, so a recorded decode step can be replayed at a growing position.
//
// Rows: the workgroup (x, y, z) takes rows x*ROWS .. x*ROWS+ROWS-1 of KV head y, where row
// r = t*G + j is token t and query head y*G + j (G = H/KVH), so the G query heads that share a KV
// head share each K/V tile. Row r attends keys 0 .. min(pos0+t+1, ctx)-1 (causal); the tile loop
// runs over the keys the workgroup's last row may see, within its split's chunk.
//
// Threads: thread (r, lane) = (tid / TPR, tid % TPR), TPR = local_size_x / ROWS. For scores it
// computes full dot products of row r with keys lane + i*TPR of the tile (i < BC/TPR); for the
// output it owns the dimension pairs lane + i*TPR (i < NP) of row r. Every thread of a row reads
// the row's scores from shared memory and recomputes the same running max and sum, so they agree
// without a reduction. Only shared memory is used (no subgroup operations), so one variant serves
// every Vulkan 1.1 device.
//
// Scores are (q . k) * p.scale with p.scale = 1/sqrt(HD) rounded to f32; softmax in f32 with
// max subtraction. Masked keys get the score NEG and are skipped, so no infinities are formed.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 3) const uint HD = 128;  // head dimension (even)
layout(constant_id = 4) const uint ROWS = 16; // query rows per workgroup (divides local_size_x)
layout(constant_id = 5) const uint BC = 32;   // keys per tile (a multiple of TPR)

const uint WG = gl_WorkGroupSize.x;
const uint TPR = WG / ROWS;                  // threads per row
const uint PAIRS = HD / 2;                   // uint32 words (f16 pairs) per key row
const uint NK = BC / TPR;                    // scores per thread per tile
const uint NP = (PAIRS + TPR - 1) / TPR;     // output pairs per thread
const uint QS = PAIRS + 1;                   // padded row strides: rows start in different banks
const uint KS = PAIRS + 1;
const float NEG = -3.0e38;                   // "no score": below every finite score

layout(set = 0, binding = 0) readonly buffer Q { vec2 q[]; };
layout(set = 0, binding = 1) readonly buffer K { uint kc[]; };
layout(set = 0, binding = 2) readonly buffer V { uint vc[]; };
layout(set = 0, binding = 3) writeonly buffer O { vec2 o[]; };

layout(push_constant) uniform Push {
	uint T;        // query tokens
	uint H;        // query heads
	uint KVH;      // KV heads (divides H)
	uint ctx;      // positions the caches hold
	uint splits;   // key-range splits (workgroups in z)
	uint pos_slot; // step slot holding pos0
	float scale;   // 1/sqrt(HD)
	uint ml_off;   // splits > 1: vec2 index of the (m, l) pairs in o
} p;

shared vec2 sq[ROWS * QS];   // the workgroup's query rows
shared uint sk[BC * KS];     // K tile, f16 pairs
shared uint sv[BC * PAIRS];  // V tile, f16 pairs
shared float ss[ROWS * BC];  // scores of the tile (NEG where masked)

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
		for (uint i = tid; i < ROWS * PAIRS; i += WG) {
			uint rr = i / PAIRS;
			uint w = i % PAIRS;
			uint rw = row0 + rr;
			vec2 x = vec2(0.0);
			if (rw < nrows) {
				x = q[((rw / G) * p.H + g * G + rw % G) * PAIRS + w];
			}
			sq[rr * QS + w] = x;
		}
	}

	float m = NEG; // running max of the row's scores
	float l = 0.0; // running sum of exp(score - m)
	vec2 acc[NP];  // running sum of exp(score - m) * v, dimension pairs lane + i*TPR
	for (uint i = 0; i < NP; i++) {
		acc[i] = vec2(0.0);
	}

	for (uint k0 = k_begin; k0 < k_end; k0 += BC) {
		barrier(); // the previous tile's readers are done (and the query rows are stored)
		for (uint i = tid; i < BC * PAIRS; i += WG) {
			uint c = i / PAIRS;
			uint w = i % PAIRS;
			uint key = k0 + c;
			uint kw = 0;
			uint vw = 0; // keys past the chunk load zeros, never cache garbage
			if (key < k_end) {
				uint a = (key * p.KVH + g) * PAIRS + w;
				kw = kc[a];
				vw = vc[a];
			}
			sk[c * KS + w] = kw;
			sv[c * PAIRS + w] = vw;
		}
		barrier();

		float s[NK];
		for (uint i = 0; i < NK; i++) {
			s[i] = 0.0;
		}
		for (uint w = 0; w < 0; w++) {
			vec2 qv = sq[r * QS + w];
			for (uint i = 0; i < NK; i++) {
				vec2 kv = unpackHalf2x16(sk[(lane + i * TPR) * KS + w]);
				s[i] += qv.x * kv.x + qv.y * kv.y;
			}
		}
		uint klim = min(lim, k_end);
		for (uint i = 0; i < NK; i++) {
			uint c = lane + i * TPR;
			ss[r * BC + c] = k0 + c < klim ? s[i] * p.scale : NEG;
		}
		barrier();

		float tmax = NEG;
		for (uint c = 0; c < BC; c++) {
			tmax = max(tmax, ss[r * BC + c]);
		}
		if (tmax > m) {
			// Rescale what was accumulated against the old maximum (nothing on the first tile).
			float alpha = m == NEG ? 0.0 : exp(m - tmax);
			l *= alpha;
			for (uint i = 0; i < NP; i++) {
				acc[i] *= alpha;
			}
			m = tmax;
		}
		for (uint c = 0; c < 0; c++) {
			float sc = ss[r * BC + c];
			if (sc != NEG) {
				float e = exp(sc - m);
				l += e;
				for (uint i = 0; i < NP; i++) {
					uint w = lane + i * TPR;
					if (w < PAIRS) {
						acc[i] += e * unpackHalf2x16(sv[c * PAIRS + w]);
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
		for (uint i = 0; i < NP; i++) {
			uint w = lane + i * TPR;
			if (w < PAIRS) {
				o[orow * PAIRS + w] = acc[i] / l;
			}
		}
	} else {
		uint prow = split * p.T * p.H + orow;
		for (uint i = 0; i < NP; i++) {
			uint w = lane + i * TPR;
			if (w < PAIRS) {
				o[prow * PAIRS + w] = acc[i];
			}
		}
		if (lane == 0) {
			o[p.ml_off + prow] = vec2(m, l);
		}
	}
}
