#version 450
// scale: y[i] = x[i] * alpha for n float32 values. alpha is the push constant, or, when
// alpha_slot is not NO_STEP_SLOT, the float whose bits sit in that step slot (so a recorded
// sequence can be replayed with a new factor).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
	uint n;
	float alpha;
	uint alpha_slot;
} p;

void main() {
	float alpha = p.alpha_slot == NO_STEP_SLOT ? p.alpha : uintBitsToFloat(step_value(p.alpha_slot));
	uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
		y[i] = x[i] * alpha;
	}
}
