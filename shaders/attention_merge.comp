#version 450
// attention_merge: combines the per-split partial results of attention.comp (flash-decoding,
// Dao et al. 2023) into the normalized output. One workgroup per output row (token t, head h):
//
//   M = max_s m_s over the splits with l_s > 0,  f_s = exp(m_s - M)
//   out[row][d] = (sum_s f_s * O_s[row][d]) / (sum_s f_s * l_s)
//
// part holds f32 [splits][rows][hd] unnormalized outputs, then from float index p.ml_off one
// record (m, l, 0, 0) per [splits][rows]; an empty split has l = 0 and is skipped. out is f32
// [rows][hd].
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

// MAX_SPLITS bounds p.splits (the host checks it).
#define MAX_SPLITS 256

layout(set = 0, binding = 0) readonly buffer Part { float part[]; };
layout(set = 0, binding = 1) writeonly buffer Out { float o[]; };

layout(push_constant) uniform Push {
	uint rows;   // T*H output rows
	uint hd;     // head dimension
	uint splits; // partial results per row, 1..MAX_SPLITS
	uint ml_off; // float index of the (m, l, 0, 0) records in part
} p;

shared float fs[MAX_SPLITS];

const float NEG = -3.0e38;

void main() {
	uint row = gl_WorkGroupID.x;
	uint tid = gl_LocalInvocationID.x;
	float mx = NEG;
	for (uint s = 0; s < p.splits; s++) {
		uint a = p.ml_off + 4 * (s * p.rows + row);
		if (part[a + 1] > 0.0) {
			mx = max(mx, part[a]);
		}
	}
	for (uint s = tid; s < p.splits; s += gl_WorkGroupSize.x) {
		uint a = p.ml_off + 4 * (s * p.rows + row);
		float ms = part[a];
		fs[s] = part[a + 1] > 0.0 ? (ms == mx ? 1.0 : exp(ms - mx)) : 0.0;
	}
	barrier();
	float l = 0.0;
	for (uint s = 0; s < p.splits; s++) {
		l += fs[s] * part[p.ml_off + 4 * (s * p.rows + row) + 1];
	}
	for (uint d = tid; d < p.hd; d += gl_WorkGroupSize.x) {
		float acc = 0.0;
		for (uint s = 0; s < p.splits; s++) {
			if (fs[s] > 0.0) { // empty splits (l = 0) leave their partial output unwritten
				acc += fs[s] * part[(s * p.rows + row) * p.hd + d];
			}
		}
		o[row * p.hd + d] = acc / l;
	}
}
