#version 450
// numerics_check: applies one canonical function of numerics.glsl to every element, so a test
// can compare a device's bits with cpuref's (cpuref/numerics.go). op: 0 cr_rcp, 1 cr_rsqrt,
// 2 cr_exp, 3 cr_softmax_exp. Not used by inference.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "numerics.glsl"

layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
	uint n;
	uint op;
} p;

void main() {
	uint i = gl_GlobalInvocationID.x;
	if (i >= p.n) {
		return;
	}
	float v = x[i];
	float r;
	switch (p.op) {
	case 0u: r = cr_rcp(v); break;
	case 1u: r = cr_rsqrt(v); break;
	case 2u: r = cr_exp(v); break;
	default: r = cr_softmax_exp(v); break;
	}
	y[i] = r;
}
