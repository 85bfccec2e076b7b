// Package cpuref is bitgpu's CPU reference: the whole BitNet b1.58 forward pass in plain Go, one
// function per op, each named like the GPU kernel that mirrors it. It is the oracle every kernel is
// tested against and the `--device cpu` backend. The numerics follow the README's Numerics section and the
// BitNet b1.58 papers (Ma et al. 2024, "The Era of 1-bit LLMs", arXiv:2402.17764; "BitNet b1.58
// 2B4T Technical Report", arXiv:2504.12285).
//
// Vectors are []float32 in row-major order; "[n][d]" means n rows of d contiguous elements.
// Floating-point sums run in a fixed order (index order) so results are bit-identical from run
// to run and for any number of worker goroutines.
package cpuref

import (
	"fmt"
	"math"

	"github.com/bitgpu/bitgpu/model"
)

// NormLanes is the number of partial sums of the canonical RMSNorm sum of squares (one per GPU
// invocation of rmsnorm.comp): partial l adds x[i]^2 for i = l, l+NormLanes, ... in order.
const NormLanes = 64

// RMSNorm computes dst[i] = (x[i] * inv) * w[i] for one token (x, w, dst all of length d; dst
// may alias x), with the canonical arithmetic of numerics.go:
//
//	sum  = TreeSum(partial[0..NormLanes-1]),  partial[l] = Σ_{i ≡ l mod NormLanes} x[i]*x[i]
//	mean = sum * Rcp32(d)
//	inv  = Rsqrt32(mean + eps)
//
// every product and sum rounded to f32 in that order, so shaders/rmsnorm.comp gives the same bits
// (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization"; README, Numerics). mean + eps
// must lie in Rsqrt32's domain [2^-100, 2^60] (eps > 0 and |x| < 2^30 suffice). It returns an
// error when the lengths differ or are 0.
func RMSNorm(dst, x, w []float32, eps float32) error {
	if len(x) == 0 || len(w) != len(x) || len(dst) != len(x) {
		return fmt.Errorf("cpuref: RMSNorm: lengths x %d, w %d, dst %d must be equal and non-zero", len(x), len(w), len(dst))
	}
	var partial [NormLanes]float32
	for i, v := range x {
		partial[i%NormLanes] = float32(partial[i%NormLanes] + float32(v*v))
	}
	mean := float32(TreeSum(partial[:]) * Rcp32(float32(len(x))))
	inv := Rsqrt32(float32(mean + eps))
	for i, v := range x {
		dst[i] = float32(float32(v*inv) * w[i])
	}
	return nil
}

// ActQuantFloor is the lower bound on max|x| in QuantizeActivations, so an all-zero token has a
// finite scale (the README's Numerics section).
const ActQuantFloor = 1e-5

// QuantizeActivations quantizes one token's activations x (length d) to int8 with the BitNet
// b1.58 per-token absmax rule: s = 127 * Rcp32(max(max|x|, 1e-5)), dst[i] =
// clamp(roundEven(x[i]*s), -128, 127), the product x[i]*s rounded to f32 first. It returns s (the
// factor that took x to the int8 grid; TernaryMatMul multiplies by Rcp32(s) to go back). Source:
// "The Era of 1-bit LLMs" section 2 / BitNet (Wang et al. 2023) eq. 4, with the per-token
// granularity of the 2B4T report (README, Numerics). It returns an error when len(dst) != len(x).
func QuantizeActivations(dst []int8, x []float32) (float32, error) {
	if len(dst) != len(x) {
		return 0, fmt.Errorf("cpuref: QuantizeActivations: dst has %d elements, x %d", len(dst), len(x))
	}
	var amax float32
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	s := float32(127 * Rcp32(max(amax, ActQuantFloor)))
	for i, v := range x {
		q := math.RoundToEven(float64(float32(v * s)))
		dst[i] = int8(max(-128, min(127, q)))
	}
	return s, nil
}

// RoPE rotates, in place, the first ropeDim elements of every head of x ([heads][headDim]) for a
// token at position pos (rotary position embedding, Su et al. 2021, "RoFormer", eq. 34). Pair i
// (0 <= i < ropeDim/2) turns by theta_i = pos * base^(-2i/ropeDim):
//
//	(a, b) <- (a*cos(theta_i) - b*sin(theta_i), a*sin(theta_i) + b*cos(theta_i))
//
// where in model.RoPENeox mode the pair is (x[i], x[i+ropeDim/2]) (Hugging Face rotate_half;
// BitNet GGUFs) and in model.RoPENorm mode it is (x[2i], x[2i+1]) (ggml's normal mode; llama-arch
// GGUFs). theta, cos and sin are computed in float64 and cos/sin rounded to f32; the rotation is
// f32. Elements past ropeDim are left alone. Source: the README's Numerics section. It returns an error for
// a bad shape (len(x) != heads*headDim, ropeDim odd, 0 or above headDim), a negative pos or an
// unknown mode.
func RoPE(x []float32, heads, headDim, ropeDim, pos int, base float32, mode model.RoPEMode) error {
	if heads <= 0 || headDim <= 0 || len(x) != heads*headDim {
		return fmt.Errorf("cpuref: RoPE: x has %d elements, want heads %d * headDim %d", len(x), heads, headDim)
	}
	if ropeDim <= 0 || ropeDim%2 != 0 || ropeDim > headDim {
		return fmt.Errorf("cpuref: RoPE: ropeDim %d must be even and in (0, headDim %d]", ropeDim, headDim)
	}
	if pos < 0 {
		return fmt.Errorf("cpuref: RoPE: negative position %d", pos)
	}
	if mode != model.RoPENeox && mode != model.RoPENorm {
		return fmt.Errorf("cpuref: RoPE: unknown mode %d", mode)
	}
	cos := make([]float32, ropeDim/2)
	sin := make([]float32, ropeDim/2)
	RoPEAngles(cos, sin, pos, ropeDim, base)
	RoPERotate(x, cos, sin, heads, headDim, mode)
	return nil
}

// RoPEAngles fills cos and sin (ropeDim/2 values each) for position pos as RoPE computes them:
// theta_i = pos * base^(-2i/ropeDim) in float64, cos and sin rounded to f32.
func RoPEAngles(cos, sin []float32, pos, ropeDim int, base float32) {
	for i := range cos {
		theta := float64(pos) * math.Pow(float64(base), -2*float64(i)/float64(ropeDim))
		cos[i] = float32(math.Cos(theta))
		sin[i] = float32(math.Sin(theta))
	}
}

// RoPERotate applies RoPE's rotation with the angles of RoPEAngles (len(cos) = ropeDim/2) to every
// head of x ([heads][headDim]), in place; shapes are the caller's to check (RoPE does).
func RoPERotate(x, cos, sin []float32, heads, headDim int, mode model.RoPEMode) {
	half := len(cos)
	for h := range heads {
		v := x[h*headDim : (h+1)*headDim]
		for i := range half {
			ia, ib := i, i+half
			if mode == model.RoPENorm {
				ia, ib = 2*i, 2*i+1
			}
			a, b := v[ia], v[ib]
			v[ia] = float32(float32(a*cos[i]) - float32(b*sin[i]))
			v[ib] = float32(float32(a*sin[i]) + float32(b*cos[i]))
		}
	}
}

// StoreKV writes one token's row (length kvHeads*headDim) into an f16 cache laid out
// [ctx][kvHeads*headDim] at position pos, rounding each value to the nearest f16 (ties to even) —
// the single point where K and V lose precision, on every backend (the README's Numerics section). It
// returns an error when the cache has no room for row pos.
func StoreKV(cache []uint16, pos int, row []float32) error {
	d := len(row)
	if pos < 0 || d == 0 || len(cache) < (pos+1)*d {
		return fmt.Errorf("cpuref: StoreKV: cache of %d elements has no row %d of %d elements", len(cache), pos, d)
	}
	for i, v := range row {
		cache[pos*d+i] = model.F32ToF16(v)
	}
	return nil
}

// ReLU2GLU computes the gated feed-forward activation of BitNet b1.58 2B4T: dst[i] =
// relu(g[i])^2 * u[i] = (max(g,0) * max(g,0)) * u, in f32 (HF hidden_act "relu2"; 2B4T report
// section 2). g, u and dst have the same length (dst may alias either). It returns an error when
// the lengths differ.
func ReLU2GLU(dst, g, u []float32) error {
	if len(g) != len(u) || len(dst) != len(g) {
		return fmt.Errorf("cpuref: ReLU2GLU: lengths dst %d, g %d, u %d must be equal", len(dst), len(g), len(u))
	}
	for i := range g {
		r := max(g[i], 0)
		dst[i] = float32(float32(r*r) * u[i])
	}
	return nil
}

// SiLUGLU computes the SwiGLU activation (Shazeer 2020): dst[i] = silu(g[i]) * u[i] with
// silu(g) = g * Rcp32(1 + Exp32(min(-g, 60))), each operation rounded to f32 in that order (HF
// hidden_act "silu"; the clamp keeps the reciprocal's argument in Rcp32's domain, and changes
// silu only below g = -60, where it is below 2^-80 in magnitude). g, u and dst have the same length (dst
// may alias either). It returns an error when the lengths differ.
func SiLUGLU(dst, g, u []float32) error {
	if len(g) != len(u) || len(dst) != len(g) {
		return fmt.Errorf("cpuref: SiLUGLU: lengths dst %d, g %d, u %d must be equal", len(dst), len(g), len(u))
	}
	for i := range g {
		e := Exp32(min(-g[i], 60))
		dst[i] = float32(float32(g[i]*Rcp32(float32(1+e))) * u[i])
	}
	return nil
}

// Add computes dst[i] = a[i] + b[i] in f32 (the residual connection). dst may alias a or b. It
// returns an error when the lengths differ.
func Add(dst, a, b []float32) error {
	if len(a) != len(b) || len(dst) != len(a) {
		return fmt.Errorf("cpuref: Add: lengths dst %d, a %d, b %d must be equal", len(dst), len(a), len(b))
	}
	for i := range a {
		dst[i] = a[i] + b[i]
	}
	return nil
}

// Embedding copies row token of the embedding table e (GGUF shape [dim, vocab]; F32, F16, BF16
// or Q8_0, dequantized exactly) into dst (length dim). It returns an error naming the tensor for
// a token outside [0, vocab), a wrong dst length or an unsupported type.
func Embedding(dst []float32, e *model.Tensor, token int) error {
	if e == nil {
		return fmt.Errorf("cpuref: Embedding: nil tensor")
	}
	if len(e.Shape) != 2 {
		return fmt.Errorf("cpuref: Embedding: tensor %s: want shape [dim, vocab], found %v", e.Name, e.Shape)
	}
	if token < 0 || uint64(token) >= e.Shape[1] {
		return fmt.Errorf("cpuref: Embedding: token %d outside the vocabulary [0, %d) of %s", token, e.Shape[1], e.Name)
	}
	return model.FloatRow(e, token, dst)
}

// Argmax returns the index of the largest value of x (the first one on ties; NaNs are skipped),
// or -1 when x is empty or all NaN. It is greedy decoding.
func Argmax(x []float32) int {
	best := -1
	for i, v := range x {
		if v != v {
			continue
		}
		if best < 0 || v > x[best] {
			best = i
		}
	}
	return best
}

// f16 maps every f16 bit pattern to its float32 value; the KV cache and F16 matrices read it in
// their inner loops. Entries equal model.F16ToF32 exactly.
var f16 = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = model.F16ToF32(uint16(i))
	}
	return &t
}()
