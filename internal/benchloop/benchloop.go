// Package benchloop is the decode loop the backends' Go benchmarks share, so their tok/s figures
// measure the same thing.
package benchloop

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Decoder is the part of a backend (runtime.Backend) the loop drives.
type Decoder interface {
	Prefill(tokens []int, allLogits bool) ([]float32, error)
	Decode(token int) ([]float32, error)
	Reset()
}

// Decode prefills the tokens 1..8, then runs one decode step of token 9 per b.Loop iteration,
// starting again from the prefill every 32 steps (so the context stays between 8 and 40
// tokens), and reports the decode steps per second as "tok/s".
func Decode(b *testing.B, d Decoder) {
	b.Helper()
	prompt := []int{1, 2, 3, 4, 5, 6, 7, 8}
	_, err := d.Prefill(prompt, false)
	require.NoError(b, err)
	steps := 0
	for b.Loop() {
		if steps == 32 {
			d.Reset()
			_, err = d.Prefill(prompt, false)
			require.NoError(b, err)
			steps = 0
		}
		_, err := d.Decode(9)
		require.NoError(b, err)
		steps++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
}
