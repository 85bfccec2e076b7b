package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
)

// TestLaneDotMatchesCPURef: the unrolled dot gives cpuref.LaneDot's bits for every length 0..300
// (whole 64-element blocks, partial blocks, odd tails) on values of mixed magnitudes and signs.
func TestLaneDotMatchesCPURef(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 300; n++ {
		x, e := make([]float32, n), make([]float32, n+3)
		for i := range x {
			x[i] = float32(r.NormFloat64() * math.Exp2(float64(r.IntN(20)-10)))
		}
		for i := range e {
			e[i] = float32(r.NormFloat64())
		}
		require.Equal(t, math.Float32bits(cpuref.LaneDot(x, e)), math.Float32bits(laneDot(x, e)), "length %d", n)
	}
}
