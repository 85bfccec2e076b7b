// Canonical arithmetic of bitgpu, shared by the kernels whose float results must equal the CPU
// reference bit for bit (cpuref/numerics.go is the definition; the README's Numerics section,
// "Bit-exact contract", explains it). Vulkan makes f32 add, subtract and multiply correctly
// rounded but leaves division, sqrt, inversesqrt and exp implementation-defined, so these
// functions use only the former, with fixed seeds and step counts. Every variable is `precise`
// (SPIR-V NoContraction): a compiler must not fuse a multiply and an add into one rounding.
#ifndef BITGPU_NUMERICS_GLSL
#define BITGPU_NUMERICS_GLSL

// cr_split cuts a into hi + lo with 12 significant bits each (Veltkamp).
void cr_split(float a, out float hi, out float lo) {
	precise float c = 4097.0 * a;
	precise float h = c - (c - a);
	hi = h;
	precise float l = a - h;
	lo = l;
}

// cr_two_prod returns a*b rounded in p and its exact error in e (Dekker 1971).
void cr_two_prod(float a, float b, out float p, out float e) {
	precise float pr = a * b;
	float ah, al, bh, bl;
	cr_split(a, ah, al);
	cr_split(b, bh, bl);
	precise float er = (((ah * bh - pr) + ah * bl) + al * bh) + al * bl;
	p = pr;
	e = er;
}

// cr_rcp is cpuref.Rcp32: 1/x for positive normal x in [2^-100, 2^100], within 1 ulp.
float cr_rcp(float x) {
	precise float y = uintBitsToFloat(0x7EF311C3u - floatBitsToUint(x));
	for (int i = 0; i < 3; i++) {
		y = y * (2.0 - x * y);
	}
	float p, e;
	cr_two_prod(x, y, p, e);
	precise float r = (1.0 - p) - e;
	precise float out_v = y + y * r;
	return out_v;
}

// cr_rsqrt is cpuref.Rsqrt32: 1/sqrt(x) for positive x in [2^-100, 2^60], within 1 ulp.
float cr_rsqrt(float x) {
	precise float h = 0.5 * x;
	precise float y = uintBitsToFloat(0x5F3759DFu - (floatBitsToUint(x) >> 1));
	for (int i = 0; i < 3; i++) {
		y = y * (1.5 - (h * y) * y);
	}
	float yy, yy_err, p, e;
	cr_two_prod(y, y, yy, yy_err);
	cr_two_prod(x, yy, p, e);
	precise float r = ((1.0 - p) - e) - x * yy_err;
	precise float out_v = y + (0.5 * y) * r;
	return out_v;
}

// cr_exp is cpuref.Exp32: e^x within 2 ulp on [-86, 88], 0 below, +Inf above, NaN for NaN.
float cr_exp(float x) {
	if (isnan(x)) {
		return x;
	}
	if (x < -86.0) {
		return 0.0;
	}
	if (x > 88.0) {
		return uintBitsToFloat(0x7F800000u);
	}
	precise float t = x * uintBitsToFloat(0x3FB8AA3Bu) + 0.5; // x*log2(e) + 1/2, two roundings
	float k = floor(t);
	precise float r = (x - k * uintBitsToFloat(0x3F318000u)) - k * uintBitsToFloat(0xB95E8083u);
	precise float p = uintBitsToFloat(0x39500D01u); // 1/7!
	p = p * r + uintBitsToFloat(0x3AB60B61u);        // 1/6!
	p = p * r + uintBitsToFloat(0x3C088889u);        // 1/5!
	p = p * r + uintBitsToFloat(0x3D2AAAABu);        // 1/4!
	p = p * r + uintBitsToFloat(0x3E2AAAABu);        // 1/3!
	p = p * r + 0.5;
	p = p * r + 1.0;
	p = p * r + 1.0;
	precise float out_v = p * uintBitsToFloat(uint(int(k) + 127) << 23);
	return out_v;
}

// cr_softmax_exp is cpuref.SoftmaxExp: e^x for a score minus a maximum, 0 below -40.
float cr_softmax_exp(float x) {
	return x < -40.0 ? 0.0 : cr_exp(x);
}

#endif
