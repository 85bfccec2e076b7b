package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The plot helpers every bench's --plot shares (bench, bench e2e, bench serve); pure Go, so they
// build without cgo too.

// savePlot writes p as dir/name.png and dir/name.svg (7 x 4 inches, and wider by its legend's
// width), each through writeOutput ("--plot" errors, mode 0644); dir must exist. The legend is
// drawn to the right of the plot, never over the data.
func savePlot(p *plot.Plot, dir, name string) error {
	legend := p.Legend
	p.Legend = plot.NewLegend() // p draws none; legend goes beside it
	defer func() { p.Legend = legend }()
	legend.Top, legend.Left = true, true
	for _, ext := range []string{"png", "svg"} {
		probe := draw.New(vgimg.New(vg.Inch, vg.Inch))
		lw := legendWidth(legend, probe)
		wt, err := draw.NewFormattedCanvas(7*vg.Inch+lw, 4*vg.Inch, ext)
		if err != nil {
			return fmt.Errorf("--plot %s: %w", dir, err)
		}
		dc := draw.New(wt)
		p.Draw(draw.Crop(dc, 0, -lw, 0, 0))
		if lw > 0 {
			legend.Draw(draw.Crop(dc, dc.Max.X-dc.Min.X-lw+vg.Points(4), 0, 0, -vg.Points(24)))
		}
		if err := writeOutput("--plot", filepath.Join(dir, name+"."+ext), func(w io.Writer) error {
			_, err := wt.WriteTo(w)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// log2Ticks marks exactly the measured values xs on a log-2 axis, labelled as integers.
func log2Ticks(xs []float64) plot.ConstantTicks {
	var t plot.ConstantTicks
	for _, x := range xs {
		t = append(t, plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'f', -1, 64)})
	}
	return t
}

// legendWidth is the width the legend needs to the right of the plot (0 without entries).
func legendWidth(l plot.Legend, c draw.Canvas) vg.Length {
	r := l.Rectangle(c)
	if r.Max.X <= r.Min.X {
		return 0
	}
	return r.Max.X - r.Min.X + vg.Points(8)
}
