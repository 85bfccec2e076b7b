#version 450
// reduce_sum: each workgroup writes the float32 sum of its grid-stride share of
// x[in_off .. in_off+n) to partial[out_off + gl_WorkGroupID.x]; the host repeats the pass over the
// partials until one value is left.
// Variants: USE_SUBGROUP=1 reduces with subgroupAdd (devices with subgroup arithmetic in compute),
// USE_SUBGROUP=0 with a shared-memory tree (any Vulkan 1.1 device). local_size_x must be a power
// of two.
#extension GL_GOOGLE_include_directive : require
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#include "common.glsl"

layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) writeonly buffer Partial { float partial[]; };

layout(push_constant) uniform Push {
	uint n;       // values to sum
	uint in_off;  // first value in x
	uint out_off; // first partial written
} p;

#if USE_SUBGROUP
// One slot per subgroup; the smallest subgroup bitgpu meets is 4 wide.
shared float sums[gl_WorkGroupSize.x / 4];
#else
shared float sums[gl_WorkGroupSize.x];
#endif

void main() {
	uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	float acc = 0.0;
	for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
		acc += x[p.in_off + i];
	}
#if USE_SUBGROUP
	acc = subgroupAdd(acc);
	if (subgroupElect()) {
		sums[gl_SubgroupID] = acc;
	}
	barrier();
	if (gl_SubgroupID == 0) {
		float v = 0.0;
		for (uint j = gl_SubgroupInvocationID; j < gl_NumSubgroups; j += gl_SubgroupSize) {
			v += sums[j];
		}
		v = subgroupAdd(v);
		if (subgroupElect()) {
			partial[p.out_off + gl_WorkGroupID.x] = v;
		}
	}
#else
	uint lid = gl_LocalInvocationID.x;
	sums[lid] = acc;
	barrier();
	for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
		if (lid < s) {
			sums[lid] += sums[lid + s];
		}
		barrier();
	}
	if (lid == 0) {
		partial[p.out_off + gl_WorkGroupID.x] = sums[0];
	}
#endif
}
