#version 450
// Embedding gather on the device: x[t][i] = E[tok[t]][i] as f32 for T tokens, so only the token
// ids (4 bytes each) cross the bus, not a row of floats. The conversion is model.FloatRow's,
// bit for bit, done in integer arithmetic and stored as bits (no float operation can touch a NaN
// payload or flush a subnormal):
//   type 0 F16:  half_bits_to_float_bits (model.F16ToF32: exact, NaN quieted as x448/float16)
//   type 1 F32:  the bits as they are
//   type 2 BF16: bits << 16 (model.BF16ToF32)
// The table sits in up to 8 bindings (e0..e7), row chunks of rows_per_chunk rows each (the last
// may be shorter), because a large table exceeds one binding's maxStorageBufferRange; binding j
// holds chunk chunk0 + j, and rows outside chunks [chunk0, chunk0 + chunks) are left to another
// dispatch (tables of more than 8 chunks). One invocation per output element: x = global id.x,
// token = workgroup id.y. D must be even for the 16-bit types (two values a word).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "half.glsl"

layout(set = 0, binding = 0) readonly buffer Tok { uint tok[]; };   // token ids [T]
layout(set = 0, binding = 1) writeonly buffer X { uint x[]; };      // f32 bits [T][D]
layout(set = 0, binding = 2) readonly buffer E0 { uint e0[]; };
layout(set = 0, binding = 3) readonly buffer E1 { uint e1[]; };
layout(set = 0, binding = 4) readonly buffer E2 { uint e2[]; };
layout(set = 0, binding = 5) readonly buffer E3 { uint e3[]; };
layout(set = 0, binding = 6) readonly buffer E4 { uint e4[]; };
layout(set = 0, binding = 7) readonly buffer E5 { uint e5[]; };
layout(set = 0, binding = 8) readonly buffer E6 { uint e6[]; };
layout(set = 0, binding = 9) readonly buffer E7 { uint e7[]; };

layout(push_constant) uniform Push {
	uint D;              // row width (values)
	uint T;              // tokens
	uint type;           // 0 F16, 1 F32, 2 BF16
	uint rows;           // rows of the table (a larger id is left alone; the host checks ids)
	uint rows_per_chunk; // rows of every chunk but the last
	uint chunk0;         // the chunk bound at e0
	uint chunks;         // chunks bound (1..8)
} p;

// tableWord returns word idx of bound chunk c.
uint tableWord(uint c, uint idx) {
	switch (c) {
	case 0u: return e0[idx];
	case 1u: return e1[idx];
	case 2u: return e2[idx];
	case 3u: return e3[idx];
	case 4u: return e4[idx];
	case 5u: return e5[idx];
	case 6u: return e6[idx];
	default: return e7[idx];
	}
}

void main() {
	uint i = gl_GlobalInvocationID.x;
	uint t = gl_WorkGroupID.y;
	if (i >= p.D || t >= p.T) return;
	uint row = tok[t];
	if (row >= p.rows) return;
	uint chunk = row / p.rows_per_chunk;
	if (chunk < p.chunk0 || chunk >= p.chunk0 + p.chunks) return;
	uint r = row - chunk * p.rows_per_chunk;
	uint c = chunk - p.chunk0;
	uint bits;
	if (p.type == 1u) {
		bits = tableWord(c, r * p.D + i);
	} else {
		uint w = tableWord(c, (r * p.D + i) >> 1);
		uint h = (i & 1u) != 0u ? w >> 16 : w & 0xffffu;
		bits = p.type == 0u ? half_bits_to_float_bits(h) : h << 16;
	}
	x[t * p.D + i] = bits;
}
