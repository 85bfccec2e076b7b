#version 450
// copy: dst[i] = src[i] for n 32-bit words, 16 bytes per load where possible.
// The bandwidth roofline of `bitgpu bench`: it reads n*4 and writes n*4 bytes.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(set = 0, binding = 0) readonly buffer Src4 { uvec4 src4[]; };
layout(set = 0, binding = 0) readonly buffer Src1 { uint src1[]; };
layout(set = 0, binding = 1) writeonly buffer Dst4 { uvec4 dst4[]; };
layout(set = 0, binding = 1) writeonly buffer Dst1 { uint dst1[]; };

layout(push_constant) uniform Push {
	uint n; // words
} p;

void main() {
	uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	uint n4 = p.n / 4;
	for (uint i = gl_GlobalInvocationID.x; i < n4; i += stride) {
		dst4[i] = src4[i];
	}
	uint t = n4 * 4 + gl_GlobalInvocationID.x;
	if (t < p.n) {
		dst1[t] = src1[t];
	}
}
