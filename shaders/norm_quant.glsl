// RMSNorm and the BitLinear per-token int8 quantization of one token, in the canonical order of
// cpuref.RMSNorm and cpuref.QuantizeActivations. One definition for the kernels that compute
// them, so their bits cannot drift apart:
//   rmsnorm.comp          one token per workgroup of 64 invocations (rmsnorm, rmsnorm_quant,
//                         quantize);
//   ternary_matmul.comp   NORMQ=1 (the *_norm modules): every workgroup of a one-token GEMV
//                         recomputes its input's norm and quantization as its prologue (the
//                         fused attn_norm, ffn_norm, attn_sub_norm, ffn_sub_norm of a decode
//                         step);
//   q8_matvec.comp        NORMQ constant: the same for the output norm before the q8_0 head.
// The including shader defines NQ_X(i), element i of the token's input (f32), and, when NQ_NORM is
// 1, NQ_W(i), element i of the norm weight. Every invocation of the workgroup must call nq_inv,
// nq_scale and nq_total_qsum, in that order, once per token (they hold barriers); invocations
// 0..63 take the partial sums (cpuref.NormLanes: partial l adds x[i]^2 for i = l, l+64, ... in
// order) and fold them in the canonical tree p[l] += p[l+s], s = 32 .. 1, in shared memory, so a
// workgroup of any size gives the same bits as a 64-wide one. (A tree every invocation folds on
// its own, with 3 barriers instead of 20, gives the same bits but made rmsnorm_quant half again
// slower on lavapipe.)
//   mean = Σx² * cr_rcp(D),  inv = cr_rsqrt(mean + eps),  y_i = (x_i * inv) * w_i   (NQ_NORM)
//   s = 127 * cr_rcp(max(max|y|, 1e-5)),  q_i = clamp(roundEven(y_i * s), -128, 127)
// The max and the integer sum Σq are exact in any order.
#ifndef BITGPU_NORM_QUANT_GLSL
#define BITGPU_NORM_QUANT_GLSL

#ifndef NQ_NORM
#define NQ_NORM 1
#endif

const uint NQ_LANES = 64u; // cpuref.NormLanes

shared float nq_red[NQ_LANES];
shared int nq_redi[gl_WorkGroupSize.x];

// nq_reduce_sum returns the canonical tree sum of the 64 partials v of invocations 0..63.
float nq_reduce_sum(float v) {
	uint lid = gl_LocalInvocationID.x;
	if (lid < NQ_LANES) nq_red[lid] = v;
	barrier();
	for (uint s = NQ_LANES / 2u; s > 0u; s >>= 1) {
		if (lid < s) {
			precise float sum = nq_red[lid] + nq_red[lid + s];
			nq_red[lid] = sum;
		}
		barrier();
	}
	float r = nq_red[0];
	barrier();
	return r;
}

// nq_reduce_max returns the largest v of invocations 0..63.
float nq_reduce_max(float v) {
	uint lid = gl_LocalInvocationID.x;
	if (lid < NQ_LANES) nq_red[lid] = v;
	barrier();
	for (uint s = NQ_LANES / 2u; s > 0u; s >>= 1) {
		if (lid < s) nq_red[lid] = max(nq_red[lid], nq_red[lid + s]);
		barrier();
	}
	float r = nq_red[0];
	barrier();
	return r;
}

#if NQ_NORM
// nq_inv returns 1/sqrt(mean(x^2) + eps) of the D-wide input (cpuref.RMSNorm's inv).
float nq_inv(uint D, float eps) {
	uint lid = gl_LocalInvocationID.x;
	precise float ss = 0.0;
	if (lid < NQ_LANES) {
		for (uint i = lid; i < D; i += NQ_LANES) {
			float v = NQ_X(i);
			ss = ss + v * v;
		}
	}
	precise float mean = nq_reduce_sum(ss) * cr_rcp(float(D));
	float inv = cr_rsqrt(mean + eps);
	return inv;
}
#define NQ_Y(i, inv) (NQ_X(i) * (inv) * NQ_W(i))
#else
#define NQ_Y(i, inv) (NQ_X(i))
#endif

// nq_scale returns the quantization scale s = 127 / max(max|y|, 1e-5) of the D-wide normed input
// (inv: nq_inv's result; unused without NQ_NORM).
float nq_scale(uint D, float inv) {
	uint lid = gl_LocalInvocationID.x;
	float amax = 0.0;
	if (lid < NQ_LANES) {
		for (uint i = lid; i < D; i += NQ_LANES) {
			precise float yv = NQ_Y(i, inv);
			amax = max(amax, abs(yv));
		}
	}
	amax = nq_reduce_max(amax);
	precise float s = 127.0 * cr_rcp(max(amax, uintBitsToFloat(0x3727C5ACu))); // 1e-5
	return s;
}

// nq_word returns the int8 values of elements 4*i4 .. 4*i4+3 packed in one uint32 (little-endian
// bytes) and adds them to qsum.
uint nq_word(uint i4, float inv, float s, inout int qsum) {
	uint word = 0u;
	for (uint b = 0u; b < 4u; b++) {
		uint i = 4u * i4 + b;
		precise float yv = NQ_Y(i, inv);
		precise float scaled = yv * s;
		int qv = int(clamp(roundEven(scaled), -128.0, 127.0));
		qsum += qv;
		word |= (uint(qv) & 0xffu) << (8u * b);
	}
	return word;
}

// nq_total_qsum returns the sum of qsum over the workgroup (exact int32, wrapping like Go's
// int32); its barriers also publish what the workgroup wrote to shared memory before it.
int nq_total_qsum(int qsum) {
	uint lid = gl_LocalInvocationID.x;
	nq_redi[lid] = qsum;
	barrier();
	for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1) {
		if (lid < s) nq_redi[lid] += nq_redi[lid + s];
		barrier();
	}
	int r = nq_redi[0];
	barrier();
	return r;
}

#ifdef NQ_QSH
// The fused prologue of a one-token GEMV (ternary_matmul.comp, q8_matvec.comp; the includer
// defines NQ_QSH, its shared uint array of at least D/4 words): every workgroup normalizes and
// quantizes the D-wide input itself. nq_prologue writes the int8 activations, four a word, to
// NQ_QSH, returns cr_rcp(s) — what rmsnorm_quant writes as the pair's first word — and sets qsum
// to Σq, the second; its last barrier publishes NQ_QSH. Every invocation calls it once.
float nq_prologue(uint D, float eps, out int qsum) {
	float inv = nq_inv(D, eps);
	float s = nq_scale(D, inv);
	int part = 0;
	for (uint i4 = gl_LocalInvocationID.x; i4 < D / 4u; i4 += gl_WorkGroupSize.x) {
		NQ_QSH[i4] = nq_word(i4, inv, s, part);
	}
	qsum = nq_total_qsum(part);
	return cr_rcp(s);
}
#endif

#endif
