// Shared declarations of every bitgpu compute shader.
//
// Specialization constants (ids fixed by package gpu):
//   0 = local_size_x, 1 = local_size_y, 2 = SUBGROUP_SIZE, 3.. kernel-specific.
// Set 1, binding 0 is the sequence's step block: 16 uint32 values the host changes between replays
// of a recorded command buffer (the decode position and friends).
#ifndef BITGPU_COMMON_GLSL
#define BITGPU_COMMON_GLSL

layout(local_size_x_id = 0, local_size_y_id = 1) in;
layout(constant_id = 2) const uint SUBGROUP_SIZE = 32;

layout(std140, set = 1, binding = 0) uniform Step {
	uvec4 step_words[4];
};

// step_value returns step slot i (0..15).
uint step_value(uint i) {
	return step_words[i >> 2][i & 3];
}

// NO_STEP_SLOT in a push constant means "use the push-constant value, not a step slot".
const uint NO_STEP_SLOT = 0xffffffffu;

#endif
