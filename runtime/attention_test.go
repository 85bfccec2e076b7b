//go:build cgo

package runtime

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/model"
)

// Parity and accuracy of the attention kernels
//
// The kernels must reproduce cpuref.Attention bit for bit (math.Float32bits equal), in prefill and
// in decode with any split count. Both are also compared with a float64 evaluation of naive
// softmax attention (a full softmax per query, no chunks), within a bound derived here for the
// canonical algorithm of cpuref.Attention's doc comment; this keeps the canonical arithmetic
// honest, since two implementations that agree could still agree on a wrong value.
//
// For one query row over keys i = 0..n-1 (f16 K and V, decoded exactly) the exact result is
// O = Σ p_i v_i / Σ p_i with p_i = exp(s_i - m), s_i = (q·k_i) * scale, scale the f32 value of
// 1/sqrt(hd) that both use. If the computed weight of key i is p_i·(1+α_i) in the numerator and
// p_i·(1+β_i) in the denominator with |α_i|, |β_i| <= η_i, then
//
//	Ô - O = Σ p_i (α_i v_i - β_i O) / Σ p_i (1+β_i)                        (because Σ p_i v_i = O Σ p_i)
//	|Ô - O| <= 2 Vmax Σ w_i η_i / (1 - max η)       w_i = p_i / Σ p_j,  |v_i|, |O| <= Vmax
//
// per output dimension d, Vmax = max_i |v_i[d]| (softmax weights sum to 1, so |O| <= Vmax). The
// final O * Rcp32(L) (Rcp32 within 1 ulp, then one rounding) has relative error ε_out <= 2^-22,
// which adds ε_out (Vmax + the above). η_i collects, as a product of (1+ε) factors bounded by
// exp(Σ |ε|) - 1 (u = 2^-24, γ_k = k u / (1 - k u), Higham eq. 3.8):
//
//   - the score: each product q_d k_id passes through at most hd/8 + 4 roundings (itself, hd/8 - 1
//     additions in its strided partial sum, the first addition to +0 being exact, 3 tree levels,
//     the product with scale), so |ŝ_i - s_i| <= e_i := γ_(hd/8+4) Σ_d |q_d k_id| * scale, and
//     p_i ∝ exp(s_i) moves by a factor within exp(±e_i) (the maxima subtracted are common to every
//     key of the row and cancel in the normalization);
//   - exp: key i of chunk c gets the weight SoftmaxExp(ŝ_i - m_c) · b_c · Π_k a_k (one factor a
//     per later fold), a chain of at most nExp = chunks + 1 calls of Exp32, each within 2 ulp
//     (relative 2^-22) of e^x at its rounded argument. The arguments are <= 0 and add up exactly
//     to ŝ_i - M̂ (M̂ the largest computed score), so Σ |x| = M̂ - ŝ_i <= x̂_i := m - s_i + e_i +
//     max_j e_j, and rounding each argument (relative u) moves the chain by at most exp(u x̂_i):
//     together nExp 2^-22 + u x̂_i;
//   - accumulation: l_c and o_c are sequential sums of at most min(n, 32) terms (the product
//     p_i v_i is one more rounding, the first addition to +0 is exact), and each fold from the
//     chunk's own on multiplies and adds (2 roundings): each term sees at most
//     nAcc = min(n, 32) + 2 chunks roundings, γ_nAcc.
//
// The cut-off of SoftmaxExp drops a key only when an argument of its chain is below -40, so its
// weight is below e^-40 of the largest; the weights dropped add up to at most n e^-40 of Σ p_i
// (>= 1), which moves O by at most 2 n e^-40 Vmax (below 1e-14 Vmax here). Chunking thus costs
// the 2 roundings per later fold counted in nAcc and the extra exp per fold counted in nExp, and
// the cut-off far less than one f32 rounding. The analysis assumes no subnormal intermediate
// (numerics.go's contract); for the test data, scores of a few units, every weight is above
// e^-20 and values are of order 1, far from 2^-126. The float64 reference has relative error far
// below 2^-40, added as 2^-40 Vmax. For the test data the bound comes to 1e-5 to 7e-5 of Vmax,
// growing with the head dimension and mostly the worst-case dot-product term; the errors
// measured are at most a few per cent of it.

const attnU = 0x1p-24

func attnGamma(k float64) float64 { return k * attnU / (1 - k*attnU) }

// attnBound is the float64 attention of one query row and the error bound of the canonical
// algorithm per output dimension.
type attnBound struct {
	exact, bound []float64
}

// attnReference computes the float64 attention of query row qr (hd values) over keys 0..n-1 of KV
// head g of the decoded caches kf, vf ([ctx][kvh][hd]) and the bound derived above.
func attnReference(qr []float32, kf, vf []float64, n, g, kvh, hd int) attnBound {
	scale := float64(attnScale(uint32(hd)))
	s := make([]float64, n)
	e := make([]float64, n)
	m, eMax := math.Inf(-1), 0.0
	for i := 0; i < n; i++ {
		k := kf[(i*kvh+g)*hd:][:hd]
		var dot, abs float64
		for d, q := range qr {
			dot += float64(q) * k[d]
			abs += math.Abs(float64(q) * k[d])
		}
		s[i] = dot * scale
		e[i] = attnGamma(float64(hd/8+4)) * abs * scale
		m = max(m, s[i])
		eMax = max(eMax, e[i])
	}
	var l float64
	w := make([]float64, n)
	for i := range w {
		w[i] = math.Exp(s[i] - m)
		l += w[i]
	}
	chunks := (n + attnChunk - 1) / attnChunk
	nExp := float64(chunks + 1)
	nAcc := float64(min(n, attnChunk) + 2*chunks)
	var sum, maxEta float64
	for i := range w {
		w[i] /= l
		xb := m - s[i] + e[i] + eMax
		eta := math.Expm1(e[i] + nExp*0x1p-22 + attnU*xb + attnGamma(nAcc))
		sum += w[i] * eta
		maxEta = max(maxEta, eta)
	}
	const epsOut = 0x1p-22
	rel := 2*sum/(1-maxEta)*(1+epsOut) + epsOut + 2*float64(n)*math.Exp(-40) + 0x1p-40
	b := attnBound{exact: make([]float64, hd), bound: make([]float64, hd)}
	for d := 0; d < hd; d++ {
		var o, vmax float64
		for i := 0; i < n; i++ {
			v := vf[(i*kvh+g)*hd+d]
			o += w[i] * v
			vmax = max(vmax, math.Abs(v))
		}
		b.exact[d], b.bound[d] = o, rel*vmax
	}
	return b
}

// attnData is one test problem: f16 caches of ctx positions with rows 0..valid-1 holding
// N(0,1) values and NaN beyond (a kernel that reads an unwritten position fails), and queries
// N(0,1) * 2.5 so scores (q·k)/sqrt(hd) are N(0, 2.5²): magnitudes of a few units, the softmax
// peaked but not one-hot.
type attnData struct {
	sh     AttentionArgs // T unused
	k, v   []uint16      // [ctx][kvh][hd] f16 bits
	kf, vf []float64
}

const attnF16NaN = 0x7e00

func newAttnData(rng *rand.Rand, sh AttentionArgs) *attnData {
	n := int(sh.Ctx * sh.KVH * sh.HeadDim)
	a := &attnData{sh: sh, k: make([]uint16, n), v: make([]uint16, n), kf: make([]float64, n), vf: make([]float64, n)}
	for i := 0; i < n; i++ {
		a.k[i] = model.F32ToF16(float32(rng.NormFloat64()))
		a.v[i] = model.F32ToF16(float32(rng.NormFloat64()))
		a.kf[i] = float64(model.F16ToF32(a.k[i]))
		a.vf[i] = float64(model.F16ToF32(a.v[i]))
	}
	return a
}

// caches returns copies of the caches with positions >= valid set to NaN.
func (a *attnData) caches(valid int) (k, v []uint16) {
	k, v = append([]uint16(nil), a.k...), append([]uint16(nil), a.v...)
	row := int(a.sh.KVH * a.sh.HeadDim)
	for i := valid * row; i < len(k); i++ {
		k[i], v[i] = attnF16NaN, attnF16NaN
	}
	return k, v
}

func attnQueries(rng *rand.Rand, n int) []float32 {
	q := make([]float32, n)
	for i := range q {
		q[i] = float32(rng.NormFloat64() * 2.5)
	}
	return q
}

// check requires got (T rows of H*hd at positions pos0..) to equal cpuref.Attention bit for bit,
// and cpuref.Attention to be within the bound derived above of the float64 reference.
func (a *attnData) check(t *testing.T, name string, q, got []float32, T, pos0 int) {
	t.Helper()
	sh := a.sh
	H, kvh, hd := int(sh.H), int(sh.KVH), int(sh.HeadDim)
	k, v := a.caches(pos0 + T)
	want := make([]float32, H*hd)
	worst := 0.0 // largest error as a fraction of its bound
	for tok := 0; tok < T; tok++ {
		pos := pos0 + tok
		qt := q[tok*H*hd : (tok+1)*H*hd]
		require.NoError(t, cpuref.Attention(want, qt, k, v, pos, H, kvh, hd))
		for h := 0; h < H; h++ {
			b := attnReference(qt[h*hd:(h+1)*hd], a.kf, a.vf, pos+1, h/(H/kvh), kvh, hd)
			for d := 0; d < hd; d++ {
				g, c := got[(tok*H+h)*hd+d], want[h*hd+d]
				if math.Float32bits(g) != math.Float32bits(c) {
					t.Fatalf("%s: token %d (position %d) head %d dim %d: gpu %v (%#08x), cpuref %v (%#08x)",
						name, tok, pos, h, d, g, math.Float32bits(g), c, math.Float32bits(c))
				}
				x, bound := b.exact[d], b.bound[d]
				if err := math.Abs(float64(c) - x); !(err <= bound) { // also catches NaN
					t.Fatalf("%s: token %d (position %d) head %d dim %d: cpuref %v, float64 %v: |error| %g > bound %g",
						name, tok, pos, h, d, c, x, err, bound)
				}
				if bound > 0 {
					worst = max(worst, math.Abs(float64(c)-x)/bound)
				}
			}
		}
	}
	t.Logf("%s: bit-identical to cpuref; largest error vs float64 %.3g of its bound", name, worst)
}

func newAttention(t *testing.T) (*gpu.Device, *AttentionKernels) {
	d := gputest.Open(t)
	a := NewAttentionKernels(d)
	t.Cleanup(a.Release)
	return d, a
}

// runPrefill uploads the problem, records Prefill (or, with tile set, the main kernel with that
// tile shape and split count, plus the merge when splits > 1) at pos0 and returns the output.
func runPrefill(t *testing.T, d *gpu.Device, a *AttentionKernels, data *attnData, q []float32, T, pos0 int, tile *attnTile, splits uint32) []float32 {
	sh := data.sh
	k, v := data.caches(pos0 + T)
	bq, bk, bv := upload(t, d, q), attnUpload(t, d, k), attnUpload(t, d, v)
	defer bq.Release()
	defer bk.Release()
	defer bv.Release()
	sh.T = uint32(T)
	n := uint32(T) * sh.H * sh.HeadDim
	out, err := d.NewBuffer(4 * uint64(n))
	require.NoError(t, err)
	defer out.Release()
	s, err := d.NewSequence()
	require.NoError(t, err)
	defer s.Release()
	require.NoError(t, s.SetStep(AttentionPosSlot, uint32(pos0)))
	switch {
	case tile == nil:
		require.NoError(t, a.Prefill(s, bq.Whole(), bk.Whole(), bv.Whole(), out.Whole(), sh))
	case splits == 1:
		require.NoError(t, a.dispatchMain(s, sh, *tile, 1, bq.Whole(), bk.Whole(), bv.Whole(), out.Whole()))
	default:
		scratch, err := d.NewBuffer(attnPartialBytes(uint32(T)*sh.H, sh.HeadDim, sh.Ctx))
		require.NoError(t, err)
		defer scratch.Release()
		require.NoError(t, a.dispatchMain(s, sh, *tile, splits, bq.Whole(), bk.Whole(), bv.Whole(), scratch.Whole()))
		require.NoError(t, a.dispatchMerge(s, sh, scratch.Whole(), out.Whole()))
	}
	require.NoError(t, s.Submit())
	return download(t, out, n)
}

func attnUpload(t *testing.T, d *gpu.Device, v []uint16) *gpu.Buffer {
	b, err := gpu.NewBufferFrom(d, v)
	require.NoError(t, err)
	t.Cleanup(b.Release) // before the device closes, which fails on leaks
	return b
}

// TestAttentionPrefillParity sweeps the prefill kernel (FlashAttention) over sequence lengths 1,
// 2, 17, 64 and 300 from position 0 and from later positions (a batch after earlier tokens),
// head dims 64 and 128 (and 32, 80), GQA ratios 1 and 4, and requires cpuref.Attention's bits,
// cpuref itself within its bound of a float64 reference. Lengths 17 and up span several query-row
// tiles, and lengths past 32 several K/V tiles (chunks).
func TestAttentionPrefillParity(t *testing.T) {
	d, a := newAttention(t)
	rng := rand.New(rand.NewPCG(5, 6))
	type tc struct{ T, pos0, H, KVH, hd int }
	var cases []tc
	for _, hd := range []int{64, 128} {
		for _, hk := range [][2]int{{2, 2}, {8, 2}} {
			for _, T := range []int{1, 2, 17, 64, 300} {
				cases = append(cases, tc{T, 0, hk[0], hk[1], hd})
			}
			cases = append(cases, tc{17, 45, hk[0], hk[1], hd}, tc{64, 237, hk[0], hk[1], hd})
		}
	}
	cases = append(cases, tc{1, 100, 4, 1, 128}, tc{40, 3, 4, 1, 32}, tc{33, 20, 6, 3, 80})
	for _, c := range cases {
		name := fmt.Sprintf("T=%d pos0=%d H=%d KVH=%d hd=%d", c.T, c.pos0, c.H, c.KVH, c.hd)
		sh := AttentionArgs{T: uint32(c.T), H: uint32(c.H), KVH: uint32(c.KVH), HeadDim: uint32(c.hd), Ctx: uint32(c.pos0 + c.T + 3)}
		data := newAttnData(rng, sh)
		q := attnQueries(rng, c.T*c.H*c.hd)
		got := runPrefill(t, d, a, data, q, c.T, c.pos0, nil, 1)
		data.check(t, name, q, got, c.T, c.pos0)
	}
}

// TestAttentionTileShapes runs the main kernel with tile shapes the devices here would not pick
// (few rows; 1, 4, 8 and 32 threads per row, which do not divide the head dim's 11 octets) and
// with split-K over a multi-token batch, merged by attention_merge, so every code path of both
// shaders is exercised; every shape and split count must give cpuref's bits.
func TestAttentionTileShapes(t *testing.T) {
	d, a := newAttention(t)
	rng := rand.New(rand.NewPCG(7, 8))
	sh := AttentionArgs{H: 8, KVH: 2, HeadDim: 88, Ctx: 90}
	data := newAttnData(rng, sh)
	const T, pos0 = 19, 70
	q := attnQueries(rng, T*8*88)
	for _, c := range []struct {
		tile   attnTile
		splits uint32
	}{{attnTile{8, 64}, 1}, {attnTile{4, 32}, 1}, {attnTile{8, 8}, 1}, {attnTile{2, 64}, 1}, {attnTile{32, 256}, 2}, {attnTile{4, 16}, 7}} {
		name := fmt.Sprintf("tile %+v splits %d", c.tile, c.splits)
		t.Run(name, func(t *testing.T) {
			require.True(t, a.fits(sh.HeadDim, c.tile), "%+v", c.tile)
			got := runPrefill(t, d, a, data, q, T, pos0, &c.tile, c.splits)
			data.check(t, name, q, got, T, pos0)
		})
	}
}

// TestAttentionDecodeReplay records one decode step per shape and replays it at growing positions
// with SetStep(AttentionPosSlot, pos), as the decode loop does: a new query each step, the caches
// written up to pos (NaN beyond), and requires cpuref's bits. It runs each shape under the
// device's split policy (recorded through AttentionKernels.Attention) and under the GPU policy
// (one split per 64 positions), so the CPU drivers of CI exercise the many-split path too:
// contexts 40 (one split: no merge), 100 and 130 (2 and 3 splits), 300 (5 splits, most of them
// empty at early positions) and 1000 (16 splits); positions 31, 32 and 33 put the last key at
// the end of the first chunk, alone in the second, and second in it. 16 query heads per KV head
// take two workgroups of rows.
// decodeRig is one recorded decode step (T = 1) of a policy with its buffers: step writes the
// query and the caches' first pos+1 rows, replays the sequence at pos and returns the output.
type decodeRig struct {
	t                     *testing.T
	q, k, v, out, scratch *gpu.Buffer
	s                     *gpu.Sequence
	n                     int
}

func newDecodeRig(t *testing.T, d *gpu.Device, a *AttentionKernels, sh AttentionArgs) *decodeRig {
	sh.T = 1
	n := int(sh.H * sh.HeadDim)
	r := &decodeRig{t: t, n: n}
	var err error
	for _, b := range []struct {
		p    **gpu.Buffer
		size uint64
	}{{&r.q, 4 * uint64(n)}, {&r.k, sh.cacheBytes()}, {&r.v, sh.cacheBytes()}, {&r.out, 4 * uint64(n)},
		{&r.scratch, max(AttentionScratchBytes(sh.H, sh.HeadDim, sh.Ctx), 4)}} {
		*b.p, err = d.NewBuffer(b.size)
		require.NoError(t, err)
	}
	r.s, err = d.NewSequence()
	require.NoError(t, err)
	require.NoError(t, a.Attention(r.s, r.q.Whole(), r.k.Whole(), r.v.Whole(), r.out.Whole(), r.scratch.Whole(), sh))
	return r
}

func (r *decodeRig) step(q []float32, k, v []uint16, pos int) []float32 {
	require.NoError(r.t, gpu.Write(r.q, 0, q))
	require.NoError(r.t, gpu.Write(r.k, 0, k))
	require.NoError(r.t, gpu.Write(r.v, 0, v))
	require.NoError(r.t, r.s.SetStep(AttentionPosSlot, uint32(pos)))
	require.NoError(r.t, r.s.Submit())
	return download(r.t, r.out, uint32(r.n))
}

func (r *decodeRig) release() {
	r.s.Release()
	for _, b := range []*gpu.Buffer{r.q, r.k, r.v, r.out, r.scratch} {
		b.Release()
	}
}

func TestAttentionDecodeReplay(t *testing.T) {
	d, devicePolicy := newAttention(t)
	gpuPolicy := NewAttentionKernels(d)
	gpuPolicy.cpuSplits = false
	t.Cleanup(gpuPolicy.Release)
	rng := rand.New(rand.NewPCG(9, 10))
	type tc struct {
		H, KVH, hd, ctx int
		pos             []int
	}
	var cases []tc
	for _, hd := range []int{64, 128} {
		for _, hk := range [][2]int{{2, 2}, {8, 2}} {
			cases = append(cases, tc{hk[0], hk[1], hd, 300, []int{0, 1, 31, 32, 33, 63, 64, 65, 150, 299}})
		}
	}
	cases = append(cases, tc{4, 1, 128, 40, []int{0, 17, 39}}, tc{20, 5, 128, 1000, []int{5, 640, 999}}, tc{4, 2, 32, 100, []int{0, 99}},
		tc{16, 1, 64, 130, []int{2, 129}})
	for _, policy := range []string{"device", "gpu"} {
		for _, c := range cases {
			sh := AttentionArgs{T: 1, H: uint32(c.H), KVH: uint32(c.KVH), HeadDim: uint32(c.hd), Ctx: uint32(c.ctx)}
			data := newAttnData(rng, sh)
			n := c.H * c.hd
			a := gpuPolicy
			if policy == "device" {
				a = devicePolicy
			}
			rig := newDecodeRig(t, d, a, sh)
			splits := a.DecodeSplits(sh.Ctx)
			for _, pos := range c.pos {
				q := attnQueries(rng, n)
				k, v := data.caches(pos + 1)
				name := fmt.Sprintf("decode (%s policy) H=%d KVH=%d hd=%d ctx=%d splits=%d pos=%d", policy, c.H, c.KVH, c.hd, c.ctx, splits, pos)
				data.check(t, name, q, rig.step(q, k, v, pos), 1, pos)
			}
			rig.release()
		}
	}
}

// TestAttentionPrefillEqualsDecode requires the attention output of a token to have the same bits
// whether the token is part of a prefill batch or decoded alone: N = 70 tokens (three chunks of
// keys) prefilled in one batch from position 0 and in two batches (37 tokens, then 33 from
// position 37), against N single-token decode steps replayed at positions 0..N-1, under the
// device's split policy and under the GPU policy (2 splits for this context).
func TestAttentionPrefillEqualsDecode(t *testing.T) {
	d, devicePolicy := newAttention(t)
	gpuPolicy := NewAttentionKernels(d)
	gpuPolicy.cpuSplits = false
	t.Cleanup(gpuPolicy.Release)
	rng := rand.New(rand.NewPCG(11, 12))
	const N = 70
	for _, sh := range []AttentionArgs{{H: 8, KVH: 2, HeadDim: 128, Ctx: 100}, {H: 4, KVH: 4, HeadDim: 64, Ctx: 100}} {
		data := newAttnData(rng, sh)
		n := int(sh.H * sh.HeadDim)
		q := attnQueries(rng, N*n)
		whole := runPrefill(t, d, devicePolicy, data, q, N, 0, nil, 1)
		first := runPrefill(t, d, devicePolicy, data, q[:37*n], 37, 0, nil, 1)
		second := runPrefill(t, d, devicePolicy, data, q[37*n:], N-37, 37, nil, 1)
		batches := append(first, second...)
		for _, policy := range []*AttentionKernels{devicePolicy, gpuPolicy} {
			rig := newDecodeRig(t, d, policy, sh)
			for pos := 0; pos < N; pos++ {
				k, v := data.caches(pos + 1)
				got := rig.step(q[pos*n:(pos+1)*n], k, v, pos)
				for i, x := range got {
					for _, c := range []struct {
						name string
						y    float32
					}{{"prefill of 70", whole[pos*n+i]}, {"prefill of 37 + 33", batches[pos*n+i]}} {
						if math.Float32bits(x) != math.Float32bits(c.y) {
							t.Fatalf("%v, %d splits: position %d element %d: decode %v (%#08x), %s %v (%#08x)",
								sh, policy.DecodeSplits(sh.Ctx), pos, i, x, math.Float32bits(x), c.name, c.y, math.Float32bits(c.y))
						}
					}
				}
			}
			rig.release()
		}
		data.check(t, fmt.Sprintf("prefill %v", sh), q, whole, N, 0)
	}
}

func TestAttentionArgumentErrors(t *testing.T) {
	d, a := newAttention(t)
	b, err := d.NewBuffer(1 << 16)
	require.NoError(t, err)
	defer b.Release()
	small, err := d.NewBuffer(64)
	require.NoError(t, err)
	defer small.Release()
	w, sm := b.Whole(), small.Whole()
	args := AttentionArgs{T: 2, H: 4, KVH: 2, HeadDim: 64, Ctx: 100}
	dec := args
	dec.T = 1
	run := func(rec func(s *gpu.Sequence) error) error {
		s, err := d.NewSequence()
		require.NoError(t, err)
		defer s.Release()
		return rec(s)
	}
	for _, c := range []struct {
		rec  func(s *gpu.Sequence) error
		want string
	}{
		{func(s *gpu.Sequence) error {
			return a.Prefill(s, w, w, w, w, AttentionArgs{T: 1, H: 6, KVH: 4, HeadDim: 64, Ctx: 8})
		}, "attention prefill: heads 6 must be a positive multiple of kv heads 4"},
		{func(s *gpu.Sequence) error {
			return a.Prefill(s, w, w, w, w, AttentionArgs{T: 1, H: 4, KVH: 2, HeadDim: 63, Ctx: 8})
		}, "attention prefill: head dim 63 must be a multiple of 8 in 8..128"},
		{func(s *gpu.Sequence) error {
			return a.Attention(s, w, w, w, w, w, AttentionArgs{T: 1, H: 4, KVH: 2, HeadDim: 256, Ctx: 8})
		}, "attention decode: head dim 256 must be a multiple of 8 in 8..128"},
		{func(s *gpu.Sequence) error {
			return a.Prefill(s, w, w, w, w, AttentionArgs{H: 4, KVH: 2, HeadDim: 64, Ctx: 8})
		}, "attention prefill: no query tokens"},
		{func(s *gpu.Sequence) error { return a.Decode(s, w, w, w, w, w, args) }, "attention decode: 2 query tokens, decode takes 1"},
		{func(s *gpu.Sequence) error { return a.Prefill(s, sm, w, w, w, args) },
			"attention prefill: q holds 64 bytes, need 2048 for T=2 heads=4 kv heads=2 head dim=64 ctx=100"},
		{func(s *gpu.Sequence) error { return a.Attention(s, w, w, sm, w, w, args) },
			"attention prefill: v cache holds 64 bytes, need 25600 for T=2 heads=4 kv heads=2 head dim=64 ctx=100"},
		{func(s *gpu.Sequence) error { return a.Decode(s, w, w, w, sm, w, dec) },
			"attention decode: out holds 64 bytes, need 1024 for T=1 heads=4 kv heads=2 head dim=64 ctx=100"},
		{func(s *gpu.Sequence) error { return a.Attention(s, w, w, w, w, sm, dec) },
			"attention decode: scratch holds 64 bytes, need 4352 for T=1 heads=4 kv heads=2 head dim=64 ctx=100"},
		{func(s *gpu.Sequence) error {
			return a.Decode(s, w, w, w, w, w, AttentionArgs{T: 1, H: 4, KVH: 2, HeadDim: 64})
		}, "attention decode: cache of 0 positions"},
	} {
		require.ErrorContains(t, run(c.rec), c.want)
	}
	a.cpuSplits = false
	require.Equal(t, uint32(2), a.DecodeSplits(100))
	require.Equal(t, uint32(64), a.DecodeSplits(1<<20))
	a.cpuSplits = true
	require.Equal(t, uint32(1), a.DecodeSplits(512))
	require.Equal(t, uint32(2), a.DecodeSplits(513))
	require.Equal(t, uint32(4), a.DecodeSplits(1<<20))
	require.Equal(t, uint64(0), AttentionScratchBytes(4, 64, 64))
	require.Equal(t, uint64(3*4*68*4), AttentionScratchBytes(4, 64, 65)) // 3 chunks of 32 positions
	require.Equal(t, uint64(128*20*132*4), AttentionScratchBytes(20, 128, 4096))
}

// BenchmarkAttention times the attention kernels on BitNet b1.58 2B4T's shape (20 query heads,
// 5 KV heads, head dim 128) with timestamp queries: prefill of a 64-token batch at the start and
// at the end of a 2048-position cache and of a 512-token batch, and one decode step at several
// positions of a 4096-position cache. It reports GPU microseconds per call and, for decode, the
// K/V bytes read per second. The device is opened as BITGPU_* and VK_* say (validation only with
// BITGPU_VALIDATE=1); without a device the benchmark is skipped, and on a CPU driver so are the
// long prefills.
func BenchmarkAttention(b *testing.B) {
	d, err := gpu.Open(gpu.OptionsFromEnv())
	if errors.Is(err, gpu.ErrNoDevice) {
		b.Skip(err)
	}
	require.NoError(b, err)
	defer d.Close()
	a := NewAttentionKernels(d)
	defer a.Release()
	const H, KVH, hd = 20, 5, 128
	type bc struct {
		name      string
		T, pos0   uint32
		ctx       uint32
		kvReadPos uint32 // decode: positions read
	}
	cases := []bc{
		{"prefill/T=64/pos0=0", 64, 0, 2048, 0},
		{"prefill/T=64/pos0=1984", 64, 1984, 2048, 0},
		{"prefill/T=512/pos0=0", 512, 0, 512, 0},
	}
	for _, pos := range []uint32{127, 1023, 4095} {
		cases = append(cases, bc{fmt.Sprintf("decode/ctx=4096/pos=%d", pos), 1, pos, 4096, pos + 1})
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if d.Info().Type == "cpu" && c.T*(c.pos0+c.T) > 64*64 {
				b.Skip("minutes per call on a CPU driver")
			}
			args := AttentionArgs{T: c.T, H: H, KVH: KVH, HeadDim: hd, Ctx: c.ctx}
			rng := rand.New(rand.NewPCG(1, 1))
			kv := make([]uint16, int(args.cacheBytes()/2))
			for i := range kv {
				kv[i] = model.F32ToF16(float32(rng.NormFloat64()))
			}
			bk, err := gpu.NewBufferFrom(d, kv)
			require.NoError(b, err)
			defer bk.Release()
			bv, err := gpu.NewBufferFrom(d, kv)
			require.NoError(b, err)
			defer bv.Release()
			bq, err := gpu.NewBufferFrom(d, attnQueries(rng, int(c.T*H*hd)))
			require.NoError(b, err)
			defer bq.Release()
			out, err := d.NewBuffer(uint64(c.T) * H * hd * 4)
			require.NoError(b, err)
			defer out.Release()
			scratch, err := d.NewBuffer(max(AttentionScratchBytes(H, hd, c.ctx), 4))
			require.NoError(b, err)
			defer scratch.Release()
			timer, err := d.NewTimer(2)
			require.NoError(b, err)
			defer timer.Release()
			s, err := d.NewSequence()
			require.NoError(b, err)
			defer s.Release()
			const reps = 10 // calls per submission, between the two timestamps
			require.NoError(b, s.Mark(timer, "start"))
			for range reps {
				require.NoError(b, a.Attention(s, bq.Whole(), bk.Whole(), bv.Whole(), out.Whole(), scratch.Whole(), args))
			}
			require.NoError(b, s.Mark(timer, "end"))
			require.NoError(b, s.SetStep(AttentionPosSlot, c.pos0))
			require.NoError(b, s.Submit()) // warm-up
			var total float64
			b.ResetTimer()
			for range b.N {
				require.NoError(b, s.Submit())
				spans, err := timer.Spans()
				require.NoError(b, err)
				total += spans[0].NS / reps
			}
			perCall := total / float64(b.N)
			b.ReportMetric(perCall/1e3, "gpu-us/call")
			if c.kvReadPos > 0 {
				bytes := float64(c.kvReadPos) * KVH * hd * 2 * 2
				b.ReportMetric(bytes/perCall, "kv-GB/s")
			}
		})
	}
}
