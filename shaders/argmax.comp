#version 450
// Greedy decoding on the device: out[out_off] = the index of the largest of x[x_off .. x_off+n)
// (the lowest index on ties; NaNs skipped; n = 0 or all NaN gives 0xffffffff). One workgroup.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) writeonly buffer Out { uint outv[]; };

layout(push_constant) uniform Push {
	uint n;
	uint x_off;
	uint out_off;
} p;

shared float best_v[gl_WorkGroupSize.x];
shared uint best_i[gl_WorkGroupSize.x];

// better reports whether (v, i) beats (bv, bi): larger value, or equal value and lower index.
bool better(float v, uint i, float bv, uint bi) {
	if (bi == 0xffffffffu) return i != 0xffffffffu;
	if (i == 0xffffffffu) return false;
	return v > bv || (v == bv && i < bi);
}

void main() {
	uint lid = gl_LocalInvocationID.x;
	float bv = 0.0;
	uint bi = 0xffffffffu;
	for (uint i = lid; i < p.n; i += gl_WorkGroupSize.x) {
		float v = x[p.x_off + i];
		if (!isnan(v) && better(v, i, bv, bi)) {
			bv = v;
			bi = i;
		}
	}
	best_v[lid] = bv;
	best_i[lid] = bi;
	barrier();
	for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
		if (lid < s && better(best_v[lid + s], best_i[lid + s], best_v[lid], best_i[lid])) {
			best_v[lid] = best_v[lid + s];
			best_i[lid] = best_i[lid + s];
		}
		barrier();
	}
	if (lid == 0) {
		outv[p.out_off] = best_i[0];
	}
}
