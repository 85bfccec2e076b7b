//go:build cgo

package main

import (
	"fmt"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/bitgpu/bitgpu/runtime"
)

// figure is a plot before it is rendered, with the series tests inspect: every point drawn
// (with its error bar's low and high ends; equal to the point without one) and the error bars.
type figure struct {
	*plot.Plot
	points    []plotter.XYs // per series: X, Y
	lows      [][]float64   // per series: the low end of each point's error bar
	highs     [][]float64   // per series: the high end
	errorBars []*plotter.YErrorBars
}

// spread is a measured value with the smallest and largest of the runs behind it.
type spread struct{ v, lo, hi float64 }

// spreads are the values of a series; as a plotter.YErrorer their error bars run from lo to hi.
type spreads []spread

// Len is the number of values.
func (s spreads) Len() int { return len(s) }

// YError is the distance from value i down to its lo and up to its hi.
func (s spreads) YError(i int) (float64, float64) {
	return s[i].v - s[i].lo, s[i].hi - s[i].v
}

// e2eFigure plots one quantity of every run against context length: a log-2 X axis with a tick
// at each measured context length, a line and points per run (the first run solid, the others
// grey and dashed), min–max error bars where the quantity has a spread, and axis ranges that
// hold every point and bar with a margin. The legend is left to savePlot (outside the data).
func e2eFigure(rep e2eReport, title, ylabel string, y func(runtime.E2EPoint) spread) (*figure, error) {
	f := &figure{Plot: plot.New()}
	p := f.Plot
	p.Title.Text = title + " — " + rep.Device.Name
	p.X.Label.Text = "context length (tokens, log scale)"
	p.Y.Label.Text = ylabel
	p.X.Scale = plot.LogScale{}
	var xs []float64
	seen := map[float64]bool{}
	yMax := 0.0
	for i, r := range rep.Runs {
		pts := make(plotter.XYs, len(r.Points))
		ss := make(spreads, len(r.Points))
		lows, highs := make([]float64, len(r.Points)), make([]float64, len(r.Points))
		withSpread := false
		for j, pt := range r.Points {
			s := y(pt)
			x := float64(pt.Context)
			pts[j], ss[j] = plotter.XY{X: x, Y: s.v}, s
			lows[j], highs[j] = min(s.lo, s.v), max(s.hi, s.v)
			withSpread = withSpread || s.hi > s.lo
			yMax = max(yMax, highs[j])
			if !seen[x] {
				seen[x] = true
				xs = append(xs, x)
			}
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			l.Color, sc.Color = colorGrey, colorGrey
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l, sc)
		p.Legend.Add(r.Weights+" weights", l, sc)
		if withSpread {
			eb, err := plotter.NewYErrorBars(struct {
				plotter.XYer
				plotter.YErrorer
			}{pts, ss})
			if err != nil {
				return nil, err
			}
			eb.Color = l.Color
			p.Add(eb)
			f.errorBars = append(f.errorBars, eb)
		}
		f.points, f.lows, f.highs = append(f.points, pts), append(f.lows, lows), append(f.highs, highs)
	}
	if len(xs) == 0 {
		return nil, fmt.Errorf("--plot: no measured points")
	}
	p.X.Tick.Marker = log2Ticks(xs)
	// A quarter octave of margin each side, so no glyph or bar touches the frame.
	p.X.Min, p.X.Max = slicesMin(xs)/math.Pow(2, 0.25), slicesMax(xs)*math.Pow(2, 0.25)
	p.Y.Min, p.Y.Max = 0, yMax*1.08
	if yMax <= 0 {
		p.Y.Max = 1
	}
	return f, nil
}

func slicesMin(xs []float64) float64 {
	m := math.Inf(1)
	for _, x := range xs {
		m = math.Min(m, x)
	}
	return m
}

func slicesMax(xs []float64) float64 {
	m := math.Inf(-1)
	for _, x := range xs {
		m = math.Max(m, x)
	}
	return m
}

// kernelTimeFigure plots each shape's GEMV time, ternary next to F16 (median µs with min–max
// error bars), each shape labelled with the ternary kernel's speed-up over F16 in the same run —
// the plot to read speed from (kernels-bandwidth shows bytes per second, where a kernel moving 8×
// fewer bytes looks no better). It also returns the speed-ups, F16 median ÷ ternary median.
func kernelTimeFigure(rep benchReport) (*figure, []float64, error) {
	f := &figure{Plot: plot.New()}
	p := f.Plot
	p.Title.Text = "GEMV time per call (median, min–max) — " + rep.Device.Name
	p.Y.Label.Text = "µs per call (lower is faster)"
	var tern, f16 spreads
	var shapes []string
	for _, r := range rep.Kernels {
		s := spread{r.MedianNS / 1e3, r.MinNS / 1e3, r.MaxNS / 1e3}
		switch r.Kernel {
		case "ternary_gemv":
			tern = append(tern, s)
			shapes = append(shapes, r.Shape)
		case "f16_gemv":
			f16 = append(f16, s)
		}
	}
	if len(tern) == 0 || len(tern) != len(f16) {
		return nil, nil, fmt.Errorf("--plot: %d ternary and %d F16 GEMV results", len(tern), len(f16))
	}
	labels := make([]string, len(shapes))
	speedups := make([]float64, len(shapes))
	for i := range shapes {
		speedups[i] = f16[i].v / tern[i].v
		labels[i] = fmt.Sprintf("%s\nternary %.1f× faster", shapes[i], speedups[i])
	}
	const half = 0.18 // each bar's centre is this far from its shape's tick, in data units
	yMax := 0.0
	for k, series := range []struct {
		name string
		s    spreads
		dx   float64
	}{{"ternary GEMV (2-bit)", tern, -half}, {"F16 GEMV", f16, half}} {
		vals := make(plotter.Values, len(series.s))
		pts := make(plotter.XYs, len(series.s))
		lows, highs := make([]float64, len(series.s)), make([]float64, len(series.s))
		for i, s := range series.s {
			vals[i] = s.v
			pts[i] = plotter.XY{X: float64(i) + series.dx, Y: s.v}
			lows[i], highs[i] = s.lo, s.hi
			yMax = max(yMax, s.hi)
		}
		bars, err := plotter.NewBarChart(vals, vg.Points(22))
		if err != nil {
			return nil, nil, err
		}
		bars.XMin = series.dx
		bars.LineStyle.Width = 0
		bars.Color = colorTernary
		if k == 1 {
			bars.Color = colorGrey
		}
		eb, err := plotter.NewYErrorBars(struct {
			plotter.XYer
			plotter.YErrorer
		}{pts, series.s})
		if err != nil {
			return nil, nil, err
		}
		eb.Color = colorErrorBar
		p.Add(bars, eb)
		p.Legend.Add(series.name, bars)
		f.errorBars = append(f.errorBars, eb)
		f.points, f.lows, f.highs = append(f.points, pts), append(f.lows, lows), append(f.highs, highs)
	}
	p.NominalX(labels...)
	p.X.Min, p.X.Max = -0.6, float64(len(shapes))-0.4
	p.Y.Min, p.Y.Max = 0, yMax*1.08
	return f, speedups, nil
}
