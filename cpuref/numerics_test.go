package cpuref

import (
	"math"
	"math/rand/v2"
	"testing"
)

// ulpDiff is the distance in units in the last place between f32 a and the float64 reference
// want, measured on the f32 grid around want.
func ulpDiff(a float32, want float64) float64 {
	w := float32(want)
	ulp := float64(math.Nextafter32(float32(math.Abs(float64(w))), float32(math.Inf(1))) - float32(math.Abs(float64(w))))
	return math.Abs(float64(a)-want) / ulp
}

// TestCanonicalAccuracy checks the canonical functions against float64 math over values spread
// across their domains (every binade of Rcp32/Rsqrt32's domain, the whole range of Exp32): each
// stays within the bound its doc comment promises (1 ulp for Rcp32 and Rsqrt32, 2 for Exp32); the largest error seen is logged.
func TestCanonicalAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var worst [3]float64
	for i := range 400000 {
		// Rcp32 and Rsqrt32: log-uniform over [2^-100, 2^100].
		x := float32(math.Exp2(-100 + 200*rng.Float64()))
		if i < 64 {
			x = float32(math.Exp2(float64(i - 32))) // exact powers of two too
		}
		worst[0] = max(worst[0], ulpDiff(Rcp32(x), 1/float64(x)))
		if x <= 0x1p60 {
			worst[1] = max(worst[1], ulpDiff(Rsqrt32(x), 1/math.Sqrt(float64(x))))
		}
		e := float32(-86 + 174*rng.Float64())
		worst[2] = max(worst[2], ulpDiff(Exp32(e), math.Exp(float64(e))))
	}
	t.Logf("max error: Rcp32 %.3f ulp, Rsqrt32 %.3f ulp, Exp32 %.3f ulp", worst[0], worst[1], worst[2])
	for i, c := range []struct {
		name  string
		bound float64
	}{{"Rcp32", 1}, {"Rsqrt32", 1}, {"Exp32", 2}} {
		if worst[i] > c.bound {
			t.Errorf("%s: error %.3f ulp, promised at most %v", c.name, worst[i], c.bound)
		}
	}
}

// TestCanonicalSpecialValues pins the values the contract relies on: e^0 = 1 exactly (the
// largest softmax weight of every chunk), the cut-offs, and exact reciprocals of powers of two.
func TestCanonicalSpecialValues(t *testing.T) {
	if got := Exp32(0); got != 1 {
		t.Errorf("Exp32(0) = %v, want exactly 1", got)
	}
	if got := Exp32(-86.5); got != 0 {
		t.Errorf("Exp32(-86.5) = %v, want 0 (no subnormal results)", got)
	}
	if got := Exp32(-86); got < 0x1p-126 {
		t.Errorf("Exp32(-86) = %v, want a normal f32", got)
	}
	if got := Exp32(89); !math.IsInf(float64(got), 1) {
		t.Errorf("Exp32(89) = %v, want +Inf", got)
	}
	if got := Exp32(float32(math.NaN())); got == got {
		t.Errorf("Exp32(NaN) = %v, want NaN", got)
	}
	if got := SoftmaxExp(-40.5); got != 0 {
		t.Errorf("SoftmaxExp(-40.5) = %v, want 0", got)
	}
	if got, want := SoftmaxExp(-39.5), Exp32(-39.5); got != want {
		t.Errorf("SoftmaxExp(-39.5) = %v, want Exp32's %v", got, want)
	}
	for _, x := range []float32{0.25, 1, 2, 1024} {
		if got := Rcp32(x); got != 1/x {
			t.Errorf("Rcp32(%v) = %v, want %v", x, got, 1/x)
		}
	}
	if got := Rsqrt32(4); got != 0.5 {
		t.Errorf("Rsqrt32(4) = %v, want 0.5", got)
	}
}

// TestTreeSum checks the canonical tree order on values where the order shows: 1 + 2^-24 + ...
// loses the small terms added one by one but keeps them when they meet first.
func TestTreeSum(t *testing.T) {
	small := float32(0x1p-24)
	p := []float32{1, small, small, small}
	// Tree: (1 + small) + (small + small) = 1 + 2^-23 (the first sum rounds to 1, ties to even).
	if got, want := TreeSum(p), float32(1+0x1p-23); got != want {
		t.Errorf("TreeSum = %v, want %v", got, want)
	}
	if got := TreeSum([]float32{3}); got != 3 {
		t.Errorf("TreeSum of one partial = %v, want 3", got)
	}
}
