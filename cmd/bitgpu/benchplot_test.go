//go:build cgo

package main

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gonum.org/v1/plot"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/runtime"
)

// testE2EReport is a ternary and an F16 run measured at 64, 128 and 256 tokens, with spreads.
func testE2EReport() e2eReport {
	run := func(weights string, scale float64) runtime.E2EResult {
		r := runtime.E2EResult{Weights: weights}
		for i, L := range []int{64, 128, 256} {
			d := scale * float64(i+1)
			r.Points = append(r.Points, runtime.E2EPoint{
				Context: L, DeviceBytes: uint64(scale * (1 << 24)),
				DecodeMSPerToken: d, DecodeMSPerTokenMin: 0.8 * d, DecodeMSPerTokenMax: 1.5 * d,
				PrefillMSPerToken: d / 2, PrefillMSPerTokenMin: 0.4 * d, PrefillMSPerTokenMax: 0.9 * d, PrefillRuns: 3,
			})
		}
		return r
	}
	return e2eReport{Device: gpu.Info{Name: "test device"}, Runs: []runtime.E2EResult{run("ternary", 1), run("f16", 3)}}
}

// requireInside requires every point of f, with its error bar, strictly inside the axes' ranges
// on X and within them on Y: nothing drawn is clipped.
func requireInside(t *testing.T, f *figure) {
	t.Helper()
	for s, pts := range f.points {
		for i, pt := range pts {
			require.Greater(t, pt.X, f.X.Min, "series %d point %d", s, i)
			require.Less(t, pt.X, f.X.Max, "series %d point %d", s, i)
			require.GreaterOrEqual(t, f.lows[s][i], f.Y.Min, "series %d point %d", s, i)
			require.Less(t, f.highs[s][i], f.Y.Max, "series %d point %d: the error bar's top", s, i)
		}
	}
}

// TestE2EFigures: the end-to-end plots have a log-2 context axis whose ticks are exactly the
// measured context lengths, min–max error bars on both latency plots (none on memory, which has
// no spread), and axis ranges that clip no point or bar.
func TestE2EFigures(t *testing.T) {
	rep := testE2EReport()
	for _, e := range e2ePlots {
		t.Run(e.name, func(t *testing.T) {
			f, err := e2eFigure(rep, e.title, e.ylabel, e.y)
			require.NoError(t, err)
			require.IsType(t, plot.LogScale{}, f.X.Scale)
			var at []float64
			for _, tk := range f.X.Tick.Marker.Ticks(f.X.Min, f.X.Max) {
				require.NotEmpty(t, tk.Label, "no unlabelled minor ticks at %v", tk.Value)
				at = append(at, tk.Value)
			}
			require.Equal(t, []float64{64, 128, 256}, at, "a tick at each measured context length")
			requireInside(t, f)
			if e.name == "e2e-memory" {
				require.Empty(t, f.errorBars)
				return
			}
			require.Len(t, f.errorBars, 2, "one set of error bars per run")
			for s, eb := range f.errorBars {
				r := rep.Runs[s]
				for i, pt := range r.Points {
					sp := e.y(pt)
					require.Equal(t, sp.v, eb.XYs[i].Y)
					require.InDelta(t, sp.v-sp.lo, eb.YErrors[i].Low, 1e-12)
					require.InDelta(t, sp.hi-sp.v, eb.YErrors[i].High, 1e-12)
					require.Greater(t, sp.hi, sp.lo)
				}
			}
		})
	}
}

// TestKernelTimeFigure: the kernel time plot has each GEMV's median time with its min–max error
// bars and labels each shape with the ternary speed-up over F16.
func TestKernelTimeFigure(t *testing.T) {
	rep := benchReport{Device: gpu.Info{Name: "test device"}, Kernels: []runtime.KernelResult{
		{Kernel: "copy", Shape: "64MiB", MedianNS: 1e6, MinNS: 1e6, MaxNS: 1e6, GBps: 100},
		{Kernel: "ternary_gemv", Shape: "2560x2560", MedianNS: 10e3, MinNS: 9e3, MaxNS: 13e3},
		{Kernel: "f16_gemv", Shape: "2560x2560", MedianNS: 70e3, MinNS: 69e3, MaxNS: 80e3},
		{Kernel: "ternary_gemv", Shape: "640x2560", MedianNS: 4e3, MinNS: 3e3, MaxNS: 5e3},
		{Kernel: "f16_gemv", Shape: "640x2560", MedianNS: 76e3, MinNS: 70e3, MaxNS: 90e3},
	}}
	f, speedups, err := kernelTimeFigure(rep)
	require.NoError(t, err)
	require.Equal(t, []float64{7, 19}, speedups)
	require.Len(t, f.errorBars, 2)
	require.Equal(t, []float64{10, 4}, []float64{f.errorBars[0].XYs[0].Y, f.errorBars[0].XYs[1].Y}, "ternary medians, µs")
	require.Equal(t, 1.0, f.errorBars[0].YErrors[0].Low)
	require.Equal(t, 3.0, f.errorBars[0].YErrors[0].High)
	require.Equal(t, 14.0, f.errorBars[1].YErrors[1].High, "F16 640x2560: 90 - 76 µs")
	var labels []string
	for _, tk := range f.X.Tick.Marker.Ticks(f.X.Min, f.X.Max) {
		labels = append(labels, tk.Label)
	}
	require.Equal(t, []string{"2560x2560\nternary 7.0× faster", "640x2560\nternary 19.0× faster"}, labels)
	requireInside(t, f)
}

// TestBenchOutputsAreWorldReadable: the JSON and every plot file are written 0644, as the GGUFs
// are (fsutil.WriteAtomic), and the plots are wider than 7 inches by the legend drawn beside them.
func TestBenchOutputsAreWorldReadable(t *testing.T) {
	dir := t.TempDir()
	kr := benchReport{Device: gpu.Info{Name: "test device"}, Kernels: []runtime.KernelResult{
		{Kernel: "copy", Shape: "64MiB", MedianNS: 1e6, MinNS: 1e6, MaxNS: 1e6, GBps: 100},
		{Kernel: "ternary_gemv", Shape: "2560x2560", MedianNS: 10e3, MinNS: 9e3, MaxNS: 13e3, GBps: 10},
		{Kernel: "f16_gemv", Shape: "2560x2560", MedianNS: 70e3, MinNS: 69e3, MaxNS: 80e3, GBps: 20},
	}}
	require.NoError(t, plotKernels(dir, kr))
	require.NoError(t, plotE2E(dir, testE2EReport()))
	require.NoError(t, writeJSON(filepath.Join(dir, "e2e.json"), testE2EReport()))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		st, err := os.Stat(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o644), st.Mode().Perm(), e.Name())
	}
	require.Equal(t, []string{"e2e-decode-latency.png", "e2e-decode-latency.svg", "e2e-memory.png", "e2e-memory.svg",
		"e2e-prefill-latency.png", "e2e-prefill-latency.svg", "e2e.json", "kernels-bandwidth.png", "kernels-bandwidth.svg",
		"kernels-time.png", "kernels-time.svg"}, names)
	for _, name := range []string{"kernels-time.png", "e2e-decode-latency.png"} {
		fh, err := os.Open(filepath.Join(dir, name))
		require.NoError(t, err)
		cfg, err := png.DecodeConfig(fh)
		fh.Close()
		require.NoError(t, err)
		require.Greater(t, cfg.Width, 7*96, "%s: 7 inches at 96 dpi plus the legend", name)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "kernels-time.svg"))
	require.NoError(t, err)
	require.True(t, strings.Contains(string(svg), "faster"), "the speed-up is written on the plot")
}
