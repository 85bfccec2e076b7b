// to_half: f32 to IEEE binary16 bits (rope_kv.comp and ternary_matmul.comp's fused RoPE/KV
// epilogue share it, so both round the KV cache exactly like cpuref.StoreKV); and the exact
// conversion back (embed_gather.comp, as model.F16ToF32).
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

// half_bits_to_float_bits converts IEEE binary16 bits h to the bits of the equal f32 (exact):
// subnormals normalized, infinities kept, a NaN quieted with its payload shifted up — bit for bit
// model.F16ToF32 (x448/float16's f16bitsToF32bits, whose steps it follows, uint32 wrap included).
uint half_bits_to_float_bits(uint h) {
	uint sign = (h & 0x8000u) << 16;
	uint e = (h & 0x7c00u) >> 10;
	uint coef = (h & 0x03ffu) << 13;
	if (e == 0x1fu) {
		return coef == 0u ? (sign | 0x7f800000u) : (sign | 0x7fc00000u | coef);
	}
	if (e == 0u) {
		if (coef == 0u) return sign;
		e++;
		while ((coef & 0x7f800000u) == 0u) {
			coef <<= 1;
			e--;
		}
		coef &= 0x007fffffu;
	}
	return sign | ((e + (0x7fu - 0xfu)) << 23) | coef;
}
#endif
