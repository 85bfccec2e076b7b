#version 450
// Top-K selection of a logits row for the sampler (runtime.Kernels.TopK; K = 256 =
// runtime.MaxSampleCandidates): the K best logits in the candidate order of
// runtime.CandidateKey — key descending, then token id ascending — with their ids. Pure integer
// work on the logits' bits: the values come back as they are.
//
// Two modes, one pass of runtime.Kernels.TopK each:
//   select (mode 0): workgroup w sorts the C = 2K logits [w*C, w*C+C) of the n in the row
//     (a bitonic sort in shared memory; missing ones are the sentinel that ranks last) and writes
//     its best K as sorted (key, id) pairs: list w.
//   merge (mode 1): workgroup w merges lists [w*G, w*G+G) of the n lists of the previous pass
//     into one: starting from the first, each next list B (sorted) joins the kept A as
//     max(A[i], B[K-1-i]) — the best K of both, a bitonic sequence — then a bitonic merge sorts it.
// A list holds the best K of its part of the row, so the best K of the row are among the lists'
// and each merge keeps them. With final = 1 a pass writes (id, logit bits) pairs — the logit read
// from the row — instead of (key, id): the last pass (one workgroup) writes the result.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint K = 256u;
const uint C = 2u * K;
const uint SENTINEL_ID = 0xffffffffu; // with key 0, below every logit's key (>= 0x007fffff)

layout(set = 0, binding = 0) readonly buffer Logits { uint logit_bits[]; };
layout(set = 0, binding = 1) readonly buffer In { uvec2 inp[]; };
layout(set = 0, binding = 2) writeonly buffer Out { uvec2 outp[]; };

layout(push_constant) uniform Push {
	uint n;      // select: logits in the row; merge: lists written by the previous pass
	uint mode;   // 0 select, 1 merge
	uint final_; // 1: write (id, logit bits), else (key, id)
	uint group;  // merge: lists per workgroup (G)
} p;

shared uint skey[C];
shared uint sid[C];

// key_of is runtime.CandidateKey: the float order as an unsigned order, -0 = +0, NaN and +Inf on top.
uint key_of(uint b) {
	uint a = b & 0x7fffffffu;
	if (a > 0x7f800000u || b == 0x7f800000u) return 0xffffffffu;
	if (a == 0u) return 0x80000000u;
	return (b & 0x80000000u) != 0u ? ~b : (b | 0x80000000u);
}

// before reports whether item i ranks before item j: larger key, or equal key and lower id.
bool before(uint i, uint j) {
	return skey[i] > skey[j] || (skey[i] == skey[j] && sid[i] < sid[j]);
}

void swap_items(uint i, uint j) {
	uint k = skey[i];
	skey[i] = skey[j];
	skey[j] = k;
	uint d = sid[i];
	sid[i] = sid[j];
	sid[j] = d;
}

// merge_sorted sorts the bitonic sequence in slots [0, K) best first (Batcher's bitonic merge).
void merge_sorted(uint lid) {
	for (uint stride = K / 2u; stride > 0u; stride >>= 1u) {
		for (uint t = lid; t < K / 2u; t += gl_WorkGroupSize.x) {
			uint i = 2u * stride * (t / stride) + (t % stride);
			uint j = i + stride;
			if (before(j, i)) swap_items(i, j);
		}
		barrier();
	}
}

// write_result writes slots [0, K) of the result as list `list`.
void write_result(uint lid, uint list) {
	for (uint t = lid; t < K; t += gl_WorkGroupSize.x) {
		uint id = sid[t];
		if (p.final_ != 0u) {
			outp[list * K + t] = uvec2(id, id == SENTINEL_ID ? 0u : logit_bits[id]);
		} else {
			outp[list * K + t] = uvec2(skey[t], id);
		}
	}
}

void main() {
	uint lid = gl_LocalInvocationID.x;
	uint w = gl_WorkGroupID.x;
	if (p.mode == 0u) {
		for (uint t = lid; t < C; t += gl_WorkGroupSize.x) {
			uint g = w * C + t;
			bool in_row = g < p.n;
			skey[t] = in_row ? key_of(logit_bits[g]) : 0u;
			sid[t] = in_row ? g : SENTINEL_ID;
		}
		barrier();
		// Bitonic sort of C items, best first.
		for (uint size = 2u; size <= C; size <<= 1u) {
			for (uint stride = size / 2u; stride > 0u; stride >>= 1u) {
				for (uint t = lid; t < C / 2u; t += gl_WorkGroupSize.x) {
					uint i = 2u * stride * (t / stride) + (t % stride);
					uint j = i + stride;
					bool best_first = (i & size) == 0u;
					if (best_first == before(j, i)) swap_items(i, j);
				}
				barrier();
			}
		}
		write_result(lid, w);
		return;
	}
	uint first = w * p.group;
	uint last = min(first + p.group, p.n);
	for (uint t = lid; t < K; t += gl_WorkGroupSize.x) {
		uvec2 e = inp[first * K + t];
		skey[t] = e.x;
		sid[t] = e.y;
	}
	for (uint l = first + 1u; l < last; l++) {
		for (uint t = lid; t < K; t += gl_WorkGroupSize.x) {
			uvec2 e = inp[l * K + t];
			skey[K + t] = e.x;
			sid[K + t] = e.y;
		}
		barrier();
		// Slot t keeps the better of A[t] and B[K-1-t]: each invocation reads B and its own A slot.
		for (uint t = lid; t < K; t += gl_WorkGroupSize.x) {
			uint j = 2u * K - 1u - t;
			if (before(j, t)) {
				skey[t] = skey[j];
				sid[t] = sid[j];
			}
		}
		barrier();
		merge_sorted(lid);
	}
	barrier();
	write_result(lid, w);
}
