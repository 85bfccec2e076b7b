package cpu

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/internal/benchloop"
	"github.com/bitgpu/bitgpu/model"
)

// BenchmarkLoRADecode: decode steps of the built-in model on the fast backend (2 threads)
// without an adapter and with a synthetic adapter of rank 8, 16 and 64 on all seven projections
// of every layer; extra-bytes/token is the adapter's F16 factors, read once per token.
func BenchmarkLoRADecode(b *testing.B) {
	m, err := assets.Open()
	require.NoError(b, err)
	for _, rank := range []int{0, 8, 16, 64} {
		b.Run(fmt.Sprintf("rank=%d", rank), func(b *testing.B) {
			var opts []Option
			extra := 0
			if rank > 0 {
				l, err := model.SynthLoRA(m.Config, rank, float32(rank), 1, 1, nil)
				require.NoError(b, err)
				for _, p := range l.Targets {
					extra += len(p.A.Data) + len(p.B.Data)
				}
				opts = append(opts, WithLoRA(cpuref.Adapter{LoRA: l, Scale: 1}))
			}
			d, err := New(m, 64, append(opts, WithThreads(2))...)
			require.NoError(b, err)
			defer d.Close()
			benchloop.Decode(b, d)
			b.ReportMetric(float64(extra), "extra-bytes/token")
		})
	}
}
