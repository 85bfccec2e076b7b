// to_half: f32 to IEEE binary16 bits (rope_kv.comp and ternary_matmul.comp's fused RoPE/KV
// epilogue share it, so both round the KV cache exactly like cpuref.StoreKV).
#ifndef BITGPU_HALF_GLSL
#define BITGPU_HALF_GLSL

// to_half converts f32 to IEEE binary16 bits, rounding to nearest, ties to even; overflow gives
// infinity, NaN stays NaN, subnormals are produced exactly.
uint to_half(float f) {
	uint x = floatBitsToUint(f);
	uint sign = (x >> 16) & 0x8000u;
	uint ax = x & 0x7fffffffu;
	if (ax >= 0x7f800000u) { // inf or nan
		return sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u);
	}
	if (ax >= 0x477ff000u) { // rounds to >= 65536: infinity
		return sign | 0x7c00u;
	}
	if (ax < 0x38800000u) { // below the smallest normal half (2^-14): subnormal or zero
		if (ax < 0x33000000u) return sign; // below half of the smallest subnormal: zero
		uint e = ax >> 23;
		uint m = (ax & 0x7fffffu) | 0x800000u;
		uint shift = 126u - e; // 14 + 13 - (e - 127) + ...
		uint hm = m >> shift;
		uint rem = m & ((1u << shift) - 1u);
		uint halfway = 1u << (shift - 1u);
		if (rem > halfway || (rem == halfway && (hm & 1u) != 0u)) hm++;
		return sign | hm;
	}
	uint h = ((ax - 0x38000000u) >> 13); // rebias exponent 127 -> 15, keep 10 mantissa bits
	uint rem = ax & 0x1fffu;
	if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0u)) h++;
	return sign | h;
}

#endif
