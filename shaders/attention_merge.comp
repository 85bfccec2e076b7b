#version 450
// attention_merge: folds the chunk partials that attention.comp wrote with p.splits > 1
// (flash-decoding, Dao et al. 2023) into the normalized output, in chunk order, with the fold of
// cpuref.Attention (step 3), so the result has the same bits as the CPU reference and as the
// single-pass kernel. One workgroup per output row (token t = row / H, head h = row % H); each
// invocation owns 4 consecutive dimensions (one vec4) and recomputes the row's scalars itself:
//
//   M = -3e38, L = 0, O = 0;  for c = 0 .. nchunks-1:
//     M' = max(M, m_c), a = cr_softmax_exp(M - M'), b = cr_softmax_exp(m_c - M'),
//     L = L*a + l_c*b, O = O*a + o_c*b, M = M'
//   out[row] = O * cr_rcp(L)
//
// with nchunks = ceil(kv_len/32), kv_len = min(pos0 + t + 1, ctx) the keys the row sees and pos0
// read from step slot p.pos_slot (as attention.comp does), so a recorded decode step stays valid
// as the position grows; with p.paged (the paged KV cache) token t's position is meta[t] instead
// of pos0 + t. Every chunk below nchunks holds at least one key the row sees, so its
// record was written.
//
// part holds f32 [chunks][rows][hd] chunk outputs o_c, then from vec4 index p.ml_off one record
// (m_c, l_c, 0, 0) per [chunks][rows]. out is f32 [rows][hd].
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "numerics.glsl"

layout(set = 0, binding = 0) readonly buffer Part { vec4 part[]; };
layout(set = 0, binding = 1) writeonly buffer Out { vec4 o[]; };
layout(set = 0, binding = 2) readonly buffer Meta { uint meta[]; }; // paged: positions [T]

layout(push_constant) uniform Push {
	uint rows;     // T*H output rows
	uint H;        // query heads
	uint qv;       // head dimension / 4
	uint ml_off;   // vec4 index of the (m_c, l_c, 0, 0) records in part
	uint ctx;      // positions the caches hold
	uint pos_slot; // step slot holding pos0
	uint paged;    // 1: token t's position is meta[t]
} p;

const uint BC = 32;        // keys per chunk: cpuref.AttentionChunk
const float NEG = -3.0e38; // the running maximum before the first chunk

void main() {
	uint row = gl_WorkGroupID.x;
	uint pos0 = step_value(p.pos_slot);
	uint t = row / p.H;
	uint kv_len = min((p.paged != 0 ? meta[t] : pos0 + t) + 1, p.ctx);
	uint nchunks = (kv_len + BC - 1) / BC;
	for (uint w = gl_LocalInvocationID.x; w < p.qv; w += gl_WorkGroupSize.x) {
		precise float M = NEG;
		precise float L = 0.0;
		precise vec4 O = vec4(0.0);
		for (uint c = 0; c < nchunks; c++) {
			uint rec = c * p.rows + row;
			vec4 ml = part[p.ml_off + rec];
			precise float mn = max(M, ml.x);
			precise float da = M - mn;
			precise float db = ml.x - mn;
			float a = cr_softmax_exp(da);
			float b = cr_softmax_exp(db);
			L = L * a + ml.y * b;
			O = O * a + part[rec * p.qv + w] * b;
			M = mn;
		}
		precise vec4 y = O * cr_rcp(L);
		o[row * p.qv + w] = y;
	}
}
