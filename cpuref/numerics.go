package cpuref

import "math"

// Canonical arithmetic: the few functions and the summation order that make the CPU reference
// and every GPU kernel produce the same bits (the README's Numerics section, "Bit-exact
// contract").
//
// Vulkan guarantees correct rounding only for f32 add, subtract, multiply and int/float
// conversion (Vulkan spec, "Precision and Operation of SPIR-V Instructions"); division is
// 2.5 ulp, sqrt and inversesqrt 2 ulp, exp 3 + 2|x| ulp, all implementation-defined. So the
// contract builds reciprocal, reciprocal square root and exp from add and multiply alone, with
// fixed seeds and a fixed number of steps, and the shaders implement the same steps
// (shaders/numerics.glsl) with every operation marked `precise` (no fused multiply-add). Here
// every product and sum is wrapped in float32(...), which the Go specification says rounds and
// so forbids fusing it with a neighbouring operation on any architecture. Sums of many terms
// follow fixed trees (LaneSum); max and abs are exact in any order.
//
// Assumed and not checked: no intermediate value is subnormal (Vulkan lets a device flush
// them). The functions below keep their own results normal; inputs that would make a sum
// cancel to below 2^-126 are the one way two conforming devices could differ.

// Bit patterns of the f32 constants, shared with shaders/numerics.glsl so both sides start from
// the same values whatever their decimal parsers do.
const (
	rcpSeed   = 0x7EF311C3 // reciprocal seed: bits(1/x) ≈ rcpSeed - bits(x), within 12 %
	rsqrtSeed = 0x5F3759DF // reciprocal square root seed: bits ≈ rsqrtSeed - bits(x)/2, within 3.5 %
	log2eBits = 0x3FB8AA3B // log2(e)
	ln2HiBits = 0x3F318000 // 0.693359375: ln 2 to 9 bits, so k*ln2Hi is exact for |k| < 2^15
	ln2LoBits = 0xB95E8083 // ln 2 - ln2Hi
)

// expPoly are 1/n! for n = 7 down to 0 (Taylor series of e^r; on |r| <= ln2/2 the truncation
// error 0.347^8/8! = 5.6e-9 is below half an ulp of the result).
var expPoly = [8]float32{
	math.Float32frombits(0x39500D01), // 1/7!
	math.Float32frombits(0x3AB60B61), // 1/6!
	math.Float32frombits(0x3C088889), // 1/5!
	math.Float32frombits(0x3D2AAAAB), // 1/4!
	math.Float32frombits(0x3E2AAAAB), // 1/3!
	0.5, 1, 1,
}

// twoProd returns p = a*b rounded and the exact error e = a*b - p (Dekker 1971, with the
// Veltkamp split of each factor into two 12-bit halves), using only rounded multiply, add and
// subtract. Exact for normal a, b with |a|, |b| < 2^115 and no underflow.
func twoProd(a, b float32) (p, e float32) {
	p = float32(a * b)
	ah, al := split(a)
	bh, bl := split(b)
	e = float32(float32(float32(float32(float32(ah*bh)-p)+float32(ah*bl))+float32(al*bh)) + float32(al*bl))
	return p, e
}

// split cuts a into hi + lo with 12 significant bits each (Veltkamp): c = 4097*a, hi = c - (c - a).
func split(a float32) (hi, lo float32) {
	c := float32(4097 * a)
	hi = float32(c - float32(c-a))
	return hi, float32(a - hi)
}

// Rcp32 returns 1/x for a positive normal f32 x in [2^-100, 2^100], within 1 ulp (exact for
// powers of two; measured 0.5 ulp, TestCanonicalAccuracy): three Newton steps y <- y*(2 - x*y)
// from the integer seed rcpSeed - bits(x), then one step y + y*r with the residual r = 1 - x*y
// computed exactly by twoProd. It is not guaranteed to be correctly rounded, but every
// conforming device computes the same bits. Other inputs give unspecified results.
func Rcp32(x float32) float32 {
	y := math.Float32frombits(rcpSeed - math.Float32bits(x))
	for range 3 {
		y = float32(y * float32(2-float32(x*y)))
	}
	p, e := twoProd(x, y)
	r := float32(float32(1-p) - e)
	return float32(y + float32(y*r))
}

// Rsqrt32 returns 1/sqrt(x) for a positive f32 x in [2^-100, 2^60], within 1 ulp
// (measured 0.5 ulp): three Newton steps y <- y*(1.5 - (h*y)*y), h = x/2, from the seed
// rsqrtSeed - bits(x)/2 (Lomont 2003, "Fast Inverse Square Root"), then one step
// y + (y/2)*r with r = 1 - x*y*y, its leading part computed exactly by twoProd. The domain keeps
// every partial product of twoProd normal (y*y >= 2^-60). Other inputs give unspecified results.
func Rsqrt32(x float32) float32 {
	h := float32(0.5 * x)
	y := math.Float32frombits(rsqrtSeed - math.Float32bits(x)>>1)
	for range 3 {
		y = float32(y * float32(1.5-float32(float32(h*y)*y)))
	}
	yy, yyErr := twoProd(y, y) // y*y = yy + yyErr exactly
	p, e := twoProd(x, yy)     // x*yy = p + e exactly
	r := float32(float32(float32(1-p)-e) - float32(x*yyErr))
	return float32(y + float32(float32(0.5*y)*r))
}

// Exp32 returns e^x within 2 ulp (measured bound 1 ulp) for x in [-86, 88]; 0 below -86 (so the
// result is never subnormal), +Inf above 88, NaN for NaN. Method (Cody & Waite 1980): k =
// floor(x*log2e + 1/2), r = (x - k*ln2Hi) - k*ln2Lo, e^r by the degree-7 Taylor polynomial in
// Horner form, then times 2^k built from its exponent bits (exact).
func Exp32(x float32) float32 {
	switch {
	case x != x:
		return x
	case x < -86:
		return 0
	case x > 88:
		return float32(math.Inf(1))
	}
	k := float32(math.Floor(float64(float32(float32(x*math.Float32frombits(log2eBits)) + 0.5))))
	r := float32(x - float32(k*math.Float32frombits(ln2HiBits)))
	r = float32(r - float32(k*math.Float32frombits(ln2LoBits)))
	p := expPoly[0]
	for _, c := range expPoly[1:] {
		p = float32(float32(p*r) + c)
	}
	return float32(p * math.Float32frombits(uint32(int32(k)+127)<<23))
}

// SoftmaxCutoff is the exponent below which a softmax weight is taken as 0: e^-40 = 4.2e-18 of
// the largest weight, so even 2^20 such keys change a sum by under 2^-37 of it (far below f32's
// 2^-24), while every weight kept, times an f16 value (>= 2^-24 in magnitude), stays a normal
// f32.
const SoftmaxCutoff = -40

// SoftmaxExp is the softmax weight e^x for x <= 0 (a score minus a maximum): 0 when x <
// SoftmaxCutoff, else Exp32(x).
func SoftmaxExp(x float32) float32 {
	if x < SoftmaxCutoff {
		return 0
	}
	return Exp32(x)
}

// TreeSum adds the len(p) partial sums p (a power of two) in the canonical tree order, in place:
// for s = len(p)/2, ..., 1: p[l] = p[l] + p[l+s] for l < s; it returns p[0]. A GPU workgroup
// with one partial per invocation gets the same bits from a shared-memory tree or from a
// subgroup butterfly (subgroupShuffleXor with offsets s: lane l < s adds lane l+s, and IEEE
// addition is commutative).
func TreeSum(p []float32) float32 {
	for s := len(p) / 2; s > 0; s /= 2 {
		for l := range s {
			p[l] = float32(p[l] + p[l+s])
		}
	}
	return p[0]
}
