#version 450
// Gated feed-forward activation, in place on the gate: g[i] = act(g[i]) * u[i] for n values.
// act 0 = ReLU² (BitNet b1.58 2B4T, HF "relu2"): r = max(g, 0); r * r * u.
// act 1 = SiLU (SwiGLU, Shazeer 2020; HF "silu"): (g * cr_rcp(1 + cr_exp(min(-g, 60)))) * u.
// Both are cpuref.ReLU2GLU / cpuref.SiLUGLU bit for bit.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "numerics.glsl"

layout(set = 0, binding = 0) buffer G { float g[]; };
layout(set = 0, binding = 1) readonly buffer U { float u[]; };

layout(push_constant) uniform Push {
	uint n;
	uint act;
} p;

void main() {
	uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
		float gv = g[i];
		if (p.act == 0u) {
			float r = max(gv, 0.0);
			precise float out_v = r * r * u[i];
			g[i] = out_v;
		} else {
			precise float den = 1.0 + cr_exp(min(-gv, 60.0));
			precise float out_v = gv * cr_rcp(den) * u[i];
			g[i] = out_v;
		}
	}
}
