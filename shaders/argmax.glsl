// Greedy decoding's comparison, shared by argmax.comp and the LM heads' fused argmax epilogue
// (q8_matvec.comp and f16_matvec.comp with their ARGMAX constant set): cpuref.Argmax's order —
// the larger value wins, NaNs never win, and of equal values (-0 and +0 are equal) the lower
// index wins. It is a total order on the (value, index) candidates, so any reduction tree over
// any split of the elements gives cpuref's one-pass scan's answer.
//
// Values are compared as keys: the float's bits mapped to a uint whose unsigned order is the
// float order, -0 mapped to +0's key. Integer comparisons are exact on every device, also for
// subnormals a device's float compare might flush. A candidate is a (key, index) pair; index
// AM_NONE means "none" (no element, or only NaNs) and loses to everything; two NONEs tie.
#ifndef BITGPU_ARGMAX_GLSL
#define BITGPU_ARGMAX_GLSL

const uint AM_NONE = 0xffffffffu;

// am_isnan reports whether bits are a NaN's (exponent all ones, mantissa not zero).
bool am_isnan(uint bits) { return (bits & 0x7fffffffu) > 0x7f800000u; }

// am_key maps the bits of a non-NaN float to its order key (-0 and +0 give the same key).
uint am_key(uint bits) {
	if (bits == 0x80000000u) bits = 0u;
	return (bits & 0x80000000u) != 0u ? ~bits : (bits | 0x80000000u);
}

// am_better reports whether candidate (k, i) beats (bk, bi).
bool am_better(uint k, uint i, uint bk, uint bi) {
	if (i == AM_NONE) return false;
	if (bi == AM_NONE) return true;
	return k > bk || (k == bk && i < bi);
}

// am_candidate is the candidate of value v at index i: (key, i), or none (AM_NONE) when v is a
// NaN or valid is false.
uvec2 am_candidate(float v, bool valid, uint i) {
	uint bits = floatBitsToUint(v);
	return uvec2(am_key(bits), valid && !am_isnan(bits) ? i : AM_NONE);
}

#ifdef AM_HEAD_GROUPS
// The LM heads' fused argmax epilogue (q8_matvec.comp, f16_matvec.comp, which define
// AM_HEAD_GROUPS, their row groups a workgroup): each row group offers one candidate.
shared uint am_k[AM_HEAD_GROUPS];
shared uint am_i[AM_HEAD_GROUPS];

// am_head_best returns, in the invocation with first set, the best of the workgroup's row
// groups' candidates; invocations with offer set give row group g's candidate c. Every
// invocation of the workgroup calls it once (it holds a barrier).
uvec2 am_head_best(bool offer, uint g, uvec2 c, bool first) {
	if (offer) {
		am_k[g] = c.x;
		am_i[g] = c.y;
	}
	barrier();
	uvec2 best = uvec2(0u, AM_NONE);
	if (first) {
		for (uint r = 0u; r < AM_HEAD_GROUPS; r++) {
			if (am_better(am_k[r], am_i[r], best.x, best.y)) best = uvec2(am_k[r], am_i[r]);
		}
	}
	return best;
}
#endif

#endif
