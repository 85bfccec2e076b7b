//go:build cgo

package runtime

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/shaders"
)

// TestCanonicalNumericsParity runs shaders/numerics.glsl's functions on the device over inputs
// spread across their domains and requires cpuref's bits exactly: the device honours the
// contract (correctly rounded f32 add/multiply, no contraction of `precise` operations) that
// every bit-exact kernel relies on.
func TestCanonicalNumericsParity(t *testing.T) {
	d := gputest.Open(t)
	code, err := shaders.SPIRV("numerics_check")
	require.NoError(t, err)
	k, err := d.NewKernel(gpu.KernelSpec{Name: "numerics_check", SPIRV: code, Bindings: 2, Outputs: []int{1}, PushSize: 8, LocalSize: [2]uint32{64, 1}})
	require.NoError(t, err)
	defer k.Release()

	const n = 1 << 16
	rng := rand.New(rand.NewPCG(3, 4))
	pos := make([]float32, n) // log-uniform over [2^-100, 2^60]: Rcp32's and Rsqrt32's domain
	exps := make([]float32, n)
	for i := range pos {
		pos[i] = float32(math.Exp2(-100 + 160*rng.Float64()))
		exps[i] = float32(-100 + 200*rng.Float64()) // Exp32's domain and both cut-offs
	}
	exps[0], exps[1], exps[2] = 0, -40, float32(math.NaN())
	for op, c := range []struct {
		name string
		in   []float32
		f    func(float32) float32
	}{
		{"rcp", pos, cpuref.Rcp32},
		{"rsqrt", pos, cpuref.Rsqrt32},
		{"exp", exps, cpuref.Exp32},
		{"softmax_exp", exps, cpuref.SoftmaxExp},
	} {
		in := upload(t, d, c.in)
		out, err := d.NewBuffer(4 * n)
		require.NoError(t, err)
		require.NoError(t, d.Run(func(s *gpu.Sequence) error {
			return s.Dispatch(k, [3]uint32{n / 64, 1, 1}, []uint32{n, uint32(op)}, in.Whole(), out.Whole())
		}))
		got := download(t, out, n)
		for i, x := range c.in {
			want := c.f(x)
			if math.Float32bits(got[i]) != math.Float32bits(want) && !(want != want && got[i] != got[i]) {
				t.Fatalf("%s(%v): device %v (%#08x), cpuref %v (%#08x)", c.name, x, got[i], math.Float32bits(got[i]), want, math.Float32bits(want))
			}
		}
		in.Release()
		out.Release()
	}
}
