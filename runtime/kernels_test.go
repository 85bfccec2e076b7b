//go:build cgo

package runtime

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/gpu/gputest"
)

var paritySizes = []uint32{1, 7, 1000, 1<<20 + 3}

func newKernels(t *testing.T, disable ...string) (*gpu.Device, *Kernels) {
	d := gputest.Open(t, disable...)
	ks, err := NewKernels(d)
	require.NoError(t, err)
	t.Cleanup(ks.Release)
	return d, ks
}

func randFloats(rng *rand.Rand, n uint32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

func upload(t *testing.T, d *gpu.Device, v []float32) *gpu.Buffer {
	b, err := gpu.NewBufferFrom(d, v)
	require.NoError(t, err)
	t.Cleanup(b.Release) // before the device closes, which fails on leaks
	return b
}

func download(t *testing.T, b *gpu.Buffer, n uint32) []float32 {
	v, err := gpu.Read[float32](b, 0, int(n))
	require.NoError(t, err)
	return v
}

// TestElementwiseParity: add, scale and copy are single IEEE-754 operations per element (or
// none), so the GPU must equal the Go loop bit for bit.
func TestElementwiseParity(t *testing.T) {
	d, ks := newKernels(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range paritySizes {
		a, b := randFloats(rng, n), randFloats(rng, n)
		ba, bb := upload(t, d, a), upload(t, d, b)
		bc, err := d.NewBuffer(4 * uint64(n))
		require.NoError(t, err)
		bs, err := d.NewBuffer(4 * uint64(n))
		require.NoError(t, err)
		bcp, err := d.NewBuffer(4 * uint64(n))
		require.NoError(t, err)
		const alpha = float32(-1.25)
		require.NoError(t, d.Run(func(s *gpu.Sequence) error {
			if err := ks.Add(s, ba.Whole(), bb.Whole(), bc.Whole(), n); err != nil {
				return err
			}
			if err := ks.Scale(s, ba.Whole(), bs.Whole(), n, alpha); err != nil {
				return err
			}
			return ks.Copy(s, bb.Whole(), bcp.Whole(), n)
		}))
		sum, scaled, copied := download(t, bc, n), download(t, bs, n), download(t, bcp, n)
		for i := uint32(0); i < n; i++ {
			require.Equal(t, a[i]+b[i], sum[i], "add n=%d i=%d", n, i)
			require.Equal(t, a[i]*alpha, scaled[i], "scale n=%d i=%d", n, i)
			require.Equal(t, math.Float32bits(b[i]), math.Float32bits(copied[i]), "copy n=%d i=%d", n, i)
		}
		for _, buf := range []*gpu.Buffer{ba, bb, bc, bs, bcp} {
			buf.Release()
		}
	}
}

// TestReduceSumParity checks both variants (subgroup arithmetic, shared-memory tree).
//
// Exact case: integers in [-8, 8] have every partial sum below 2^24 in magnitude for n <= 2^20+3
// (|sum| <= 8n < 2^24), so every f32 addition is exact in any order and the result must equal the
// Go sum exactly.
//
// Random case: any order of n-1 f32 additions has |error| <= gamma_(n-1) * sum|x_i|, where
// gamma_k = k*u/(1-k*u) and u = 2^-24 (Higham, Accuracy and Stability of Numerical Algorithms,
// eq. 4.4); the reference is the float64 sum, whose own error is negligible beside that bound.
func TestReduceSumParity(t *testing.T) {
	for _, disable := range [][]string{nil, {"subgroup-arithmetic"}} {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("reduce_sum"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			for _, n := range paritySizes {
				ints := make([]float32, n)
				var want float32
				for i := range ints {
					ints[i] = float32(rng.IntN(17) - 8)
					want += ints[i]
				}
				got := gpuSum(t, d, ks, ints)
				require.Equal(t, want, got, "integers n=%d", n)

				x := randFloats(rng, n)
				var ref, abs float64
				for _, v := range x {
					ref += float64(v)
					abs += math.Abs(float64(v))
				}
				u := math.Ldexp(1, -24)
				k := float64(n - 1)
				bound := k * u / (1 - k*u) * abs
				got = gpuSum(t, d, ks, x)
				require.InDelta(t, ref, float64(got), bound+1e-30, "random n=%d", n)
			}
		})
	}
}

func gpuSum(t *testing.T, d *gpu.Device, ks *Kernels, x []float32) float32 {
	n := uint32(len(x))
	bx := upload(t, d, x)
	defer bx.Release()
	scratch, err := d.NewBuffer(4 * uint64(ReduceSumScratch(n)))
	require.NoError(t, err)
	defer scratch.Release()
	require.NoError(t, d.Run(func(s *gpu.Sequence) error { return ks.ReduceSum(s, bx.Whole(), scratch.Whole(), n) }))
	v, err := gpu.Read[float32](scratch, 0, 1)
	require.NoError(t, err)
	return v[0]
}

func TestKernelArgumentErrors(t *testing.T) {
	d, ks := newKernels(t)
	b, err := d.NewBuffer(16)
	require.NoError(t, err)
	defer b.Release()
	err = d.Run(func(s *gpu.Sequence) error { return ks.Add(s, b.Whole(), b.Whole(), b.Whole(), 5) })
	require.ErrorContains(t, err, "add: operand 0 holds 16 bytes, need 20 for 5 elements")
	err = d.Run(func(s *gpu.Sequence) error { return ks.ReduceSum(s, b.Whole(), b.Whole(), 0) })
	require.ErrorContains(t, err, "no elements")
}
