#version 450
// RoPE on the query and key rows of T tokens, then the keys and values stored to the f16 KV cache
// at positions pos0 .. pos0+T-1 (pos0 = step slot 0, so a recorded decode step replays at the next
// position). Rotary position embedding (Su et al. 2021, "RoFormer"): pair i turns by
// theta_i = pos * base^(-2i/rope_dim); cos and sin come from a host-computed table
// ([ctx][rope_dim/2] each, f64 rounded to f32, the same values the CPU reference uses), so the
// rotation (a*c - b*s, a*s + b*c, f32, no contraction) matches it exactly. mode 0 = NEOX (pairs
// (i, i + rope_dim/2), Hugging Face rotate_half; BitNet GGUFs), 1 = NORM (pairs (2i, 2i+1)).
// The cache holds f16 as uint32 words of two halves, [ctx][kv_heads][head_dim/2], rounded to
// nearest-even by to_half (half.glsl) (not packHalf2x16, whose rounding the Vulkan spec leaves open).
// Paged KV cache (p.paged = 1, runtime.PagedKV): token t of the batch sits at position meta[t] of
// its own sequence, and the caches are pools of blocks of 32 positions, [blocks][32][kv_heads]
// [head_dim/2]: position pos of token t is row meta[p.tbl_off + t*p.tbl_stride + pos/32]*32 +
// pos%32 of the pool. The rotation is the same; only the position and the row differ.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(set = 0, binding = 0) buffer Q { float q[]; };          // [T][H][hd], rotated in place
layout(set = 0, binding = 1) readonly buffer K { float k[]; }; // [T][KVH][hd]
layout(set = 0, binding = 2) readonly buffer V { float v[]; }; // [T][KVH][hd]
layout(set = 0, binding = 3) readonly buffer CS { float cs[]; }; // cos table then sin table
layout(set = 0, binding = 4) writeonly buffer KC { uint kc[]; };
layout(set = 0, binding = 5) writeonly buffer VC { uint vc[]; };
layout(set = 0, binding = 6) readonly buffer Meta { uint meta[]; }; // paged: positions, block tables

layout(push_constant) uniform Push {
	uint T;
	uint H;
	uint KVH;
	uint hd;
	uint rope_dim;
	uint mode;
	uint ctx;      // rows of the cos/sin table and of the cache
	uint q_off;    // first float of q, k, v for token 0
	uint kv_off;
	uint paged;      // 1: positions and block tables from meta
	uint tbl_off;    // paged: index in meta of token 0's block table
	uint tbl_stride; // paged: entries per block table
} p;

const uint BLOCK = 32u; // positions per block of the paged cache (cpuref.AttentionChunk)

// position returns token t's position: meta[t] (paged) or pos0 + t.
uint position(uint t, uint pos0) {
	return p.paged != 0u ? meta[t] : pos0 + t;
}

// cache_row returns the cache row of token t at position pos.
uint cache_row(uint t, uint pos) {
	if (p.paged == 0u) {
		return pos;
	}
	return meta[p.tbl_off + t * p.tbl_stride + pos / BLOCK] * BLOCK + pos % BLOCK;
}

#include "half.glsl"

// rotatePair turns rotary pair i of the head whose q row starts at float base, in place.
void rotatePair(uint base, uint pos, uint i) {
	uint half_dim = p.rope_dim / 2u;
	uint ia = p.mode == 0u ? i : 2u * i;
	uint ib = p.mode == 0u ? i + half_dim : 2u * i + 1u;
	float c = cs[pos * half_dim + i];
	float s = cs[p.ctx * half_dim + pos * half_dim + i];
	float a = q[base + ia];
	float b = q[base + ib];
	precise float ra = a * c - b * s;
	precise float rb = a * s + b * c;
	q[base + ia] = ra;
	q[base + ib] = rb;
}

// storeWord writes cache word w (elements 2w and 2w+1) of kv row j (token t, kv head g): the
// keys rotated where 2w+e < rope_dim, the values as they are.
void storeWord(uint j, uint w) {
	uint t = j / p.KVH;
	uint g = j % p.KVH;
	uint pos = position(t, step_value(0));
	uint half_dim = p.rope_dim / 2u;
	uint src = p.kv_off + j * p.hd;
	uint dst = (cache_row(t, pos) * p.KVH + g) * (p.hd / 2u);
	float r[2];
	for (uint e = 0u; e < 2u; e++) {
		uint idx = 2u * w + e;
		float val = k[src + idx];
		if (idx < p.rope_dim) {
			bool first = p.mode == 0u ? idx < half_dim : (idx & 1u) == 0u;
			uint pi = p.mode == 0u ? (first ? idx : idx - half_dim) : idx / 2u;
			uint other = p.mode == 0u ? (first ? idx + half_dim : idx - half_dim) : (idx ^ 1u);
			float c = cs[pos * half_dim + pi];
			float s = cs[p.ctx * half_dim + pos * half_dim + pi];
			float o = k[src + other];
			precise float rv = first ? val * c - o * s : o * s + val * c;
			val = rv;
		}
		r[e] = val;
	}
	kc[dst + w] = to_half(r[0]) | (to_half(r[1]) << 16);
	vc[dst + w] = to_half(v[src + 2u * w]) | (to_half(v[src + 2u * w + 1u]) << 16);
}

void main() {
	// One invocation per rotary pair of each (token, head) of Q — T*H*rope_dim/2 of them — then
	// one per cache word of each (token, kv head) of K and V — T*KVH*hd/2 — striding over the grid
	// (runtime caps the workgroup count). Every element gets the arithmetic it had when one
	// invocation did a whole head: the pairs and words are independent.
	uint pairs = p.rope_dim / 2u;
	uint words = p.hd / 2u;
	uint nq = p.T * p.H * pairs;
	uint n = nq + p.T * p.KVH * words;
	uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	for (uint id = gl_GlobalInvocationID.x; id < n; id += stride) {
		if (id < nq) {
			uint row = id / pairs; // token t, head h: row t*H + h
			uint t = row / p.H;
			rotatePair(p.q_off + row * p.hd, position(t, step_value(0)), id % pairs);
		} else {
			uint j = (id - nq) / words;
			storeWord(j, (id - nq) % words);
		}
	}
}
