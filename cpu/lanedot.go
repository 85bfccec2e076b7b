package cpu

import "github.com/bitgpu/bitgpu/cpuref"

// laneDot is cpuref.LaneDot — Logits' canonical dot product: lane l of cpuref.LogitLanes adds
// (x[2k]·e[2k] + x[2k+1]·e[2k+1]) for pairs k ≡ l, every product and sum rounded to f32, then
// cpuref.TreeSum — with the lanes of each 64-element block unrolled over fixed-size views (no
// modulo, no bounds checks), the tail as cpuref has it. Same bits (TestLaneDotMatchesCPURef);
// the explicit float32 conversions keep the compiler from fusing a multiply-add.
func laneDot(x, e []float32) float32 {
	const lanes = cpuref.LogitLanes
	var partial [lanes]float32
	n := len(x)
	e = e[:n]
	j := 0
	for ; j+2*lanes <= n; j += 2 * lanes {
		xs, es := (*[2 * lanes]float32)(x[j:]), (*[2 * lanes]float32)(e[j:])
		for l := range lanes {
			pair := float32(float32(xs[2*l]*es[2*l]) + float32(xs[2*l+1]*es[2*l+1]))
			partial[l] = float32(partial[l] + pair)
		}
	}
	for l := 0; j < n; j, l = j+2, l+1 { // the last, partial block: lanes from 0 again
		pair := float32(x[j] * e[j])
		if j+1 < n {
			pair = float32(pair + float32(x[j+1]*e[j+1]))
		}
		partial[l] = float32(partial[l] + pair)
	}
	return cpuref.TreeSum(partial[:])
}
