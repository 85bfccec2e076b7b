package main

import (
	"fmt"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// serveFigure is one bench serve plot before it is rendered, with the series tests inspect.
type serveFigure struct {
	name   string
	plot   *plot.Plot
	series map[string]plotter.XYs // legend label → points (concurrency, value)
}

// serveFigures are bench serve's plots of rep's runs against the number of concurrent streams
// (log-2 axis, a tick at each measured count): serve-throughput, the aggregate decode tok/s; and
// serve-latency, the inter-token latency p50 and p99 and the median time to first token in ms.
func serveFigures(rep serveBenchReport) ([]serveFigure, error) {
	if len(rep.Runs) == 0 {
		return nil, fmt.Errorf("--plot: no measured runs (--fit-only)")
	}
	mode := "batched"
	if !rep.Batched {
		mode = "unbatched"
	}
	var xs []float64
	seen := map[float64]bool{}
	for _, r := range rep.Runs {
		if x := float64(r.Concurrency); !seen[x] {
			seen[x] = true
			xs = append(xs, x)
		}
	}
	build := func(name, title, ylabel string, labels []string, y []func(serveBenchRun) float64) (serveFigure, error) {
		f := serveFigure{name: name, plot: plot.New(), series: map[string]plotter.XYs{}}
		p := f.plot
		p.Title.Text = fmt.Sprintf("%s — %s on %s, %s", title, rep.Model, rep.Device, mode)
		p.X.Label.Text = "concurrent streams (log scale)"
		p.Y.Label.Text = ylabel
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = log2Ticks(xs)
		yMax := 0.0
		for i, label := range labels {
			pts := make(plotter.XYs, len(rep.Runs))
			for j, r := range rep.Runs {
				pts[j] = plotter.XY{X: float64(r.Concurrency), Y: y[i](r)}
				yMax = max(yMax, pts[j].Y)
			}
			l, sc, err := plotter.NewLinePoints(pts)
			if err != nil {
				return f, err
			}
			switch i { // the first series solid black, the others dashed grey and blue
			case 1:
				l.Color, sc.Color = colorGrey, colorGrey
				l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			case 2:
				l.Color, sc.Color = colorTernary, colorTernary
				l.Dashes = []vg.Length{vg.Points(1), vg.Points(2)}
			}
			p.Add(l, sc)
			p.Legend.Add(label, l, sc)
			f.series[label] = pts
		}
		p.X.Min, p.X.Max = slices.Min(xs)/1.2, slices.Max(xs)*1.2
		p.Y.Min, p.Y.Max = 0, max(yMax*1.08, 1e-9)
		return f, nil
	}
	tp, err := build("serve-throughput", "Aggregate decode throughput", "tokens/s", []string{"decode tok/s"},
		[]func(serveBenchRun) float64{func(r serveBenchRun) float64 { return r.DecodeTokS }})
	if err != nil {
		return nil, err
	}
	lat, err := build("serve-latency", "Latency", "ms", []string{"inter-token p50", "inter-token p99", "first token p50"},
		[]func(serveBenchRun) float64{
			func(r serveBenchRun) float64 { return r.ITLP50 },
			func(r serveBenchRun) float64 { return r.ITLP99 },
			func(r serveBenchRun) float64 { return r.TTFTP50 },
		})
	if err != nil {
		return nil, err
	}
	return []serveFigure{tp, lat}, nil
}

// plotServe writes serveFigures as dir/serve-throughput.{png,svg} and dir/serve-latency.{png,svg}.
func plotServe(dir string, rep serveBenchReport) error {
	figs, err := serveFigures(rep)
	if err != nil {
		return err
	}
	for _, f := range figs {
		if err := savePlot(f.plot, dir, f.name); err != nil {
			return err
		}
	}
	return nil
}
