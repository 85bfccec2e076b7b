//go:build cgo

package runtime

import (
	"testing"

	"github.com/bitgpu/bitgpu/gpu/gputest"
)

// BenchmarkGEMV2B4T times the ternary and F16 GEMV kernels on the BitNet b1.58 2B4T shapes with
// GPU timestamps and reports, per shape, GB/s and the ratio to the copy kernel's bandwidth
// measured in the same run (target for the ternary GEMV on a GPU: >= 0.85). Run with
// `go test -run ^$ -bench GEMV2B4T ./runtime/`.
func BenchmarkGEMV2B4T(b *testing.B) {
	dev := gputest.Open(b)
	for i := 0; i < b.N; i++ {
		res, err := BenchKernels(dev, BenchOptions{Shapes: Shapes2B4T, Repeats: 10, Warmup: 2})
		if err != nil {
			b.Fatal(err)
		}
		if i == b.N-1 {
			for _, r := range res {
				if r.Kernel == "copy" {
					b.ReportMetric(r.GBps, "copy-GB/s")
					continue
				}
				b.ReportMetric(r.GBps, r.Kernel+"-"+r.Shape+"-GB/s")
				b.ReportMetric(r.RooflineRatio, r.Kernel+"-"+r.Shape+"-vs-copy")
			}
		}
	}
}
