//go:build cgo

package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/runtime"
)

func init() {
	benchCmd().AddCommand(benchKernelsCmd())
}

// benchReport is what --json writes: the device, the date and the results.
type benchReport struct {
	Device  gpu.Info               `json:"device"`
	Date    string                 `json:"date"`
	Kernels []runtime.KernelResult `json:"kernels,omitempty"`
}

func benchKernelsCmd() *cobra.Command {
	var (
		shapes   []string
		repeats  int
		warmup   int
		jsonPath string
		plotDir  string
	)
	cmd := &cobra.Command{
		Use:   "kernels",
		Short: "Time the copy, ternary GEMV and F16 GEMV kernels on the 2B4T shapes",
		Long: `Times each kernel with GPU timestamp queries (median of --repeats after --warmup runs) and
reports bytes moved, GB/s, GOP/s and the ratio to the copy kernel's bandwidth measured in the
same run (the device's achievable roofline). Shapes are ROWSxCOLS (outputs x inputs).`,
		Example: "  bitgpu bench kernels\n  bitgpu bench kernels --shape 4096x4096 --repeats 50 --json k.json --plot .",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			shs := runtime.Shapes2B4T
			if len(shapes) > 0 {
				shs = nil
				for _, s := range shapes {
					sh, err := parseShape(s)
					if err != nil {
						return err
					}
					shs = append(shs, sh)
				}
			}
			if repeats < 1 {
				return fmt.Errorf("--repeats %d: must be at least 1", repeats)
			}
			if err := checkBenchOutputs(jsonPath, plotDir); err != nil {
				return err
			}
			dev, err := gpu.Open(gpu.OptionsFromEnv())
			if err != nil {
				return err
			}
			watchValidation(dev)
			defer closeInto(&err, dev)
			res, err := runtime.BenchKernels(dev, runtime.BenchOptions{Shapes: shs, Repeats: repeats, Warmup: warmup})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "device: %s\n", dev.Info())
			printKernelTable(cmd.OutOrStdout(), res)
			rep := benchReport{Device: dev.Info(), Date: time.Now().UTC().Format(time.RFC3339), Kernels: res}
			if jsonPath != "" {
				if err := writeJSON(jsonPath, rep); err != nil {
					return err
				}
			}
			if plotDir != "" {
				if err := plotKernels(plotDir, rep); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&shapes, "shape", nil, "matrix shape ROWSxCOLS (repeatable; default: the 2B4T shapes)")
	cmd.Flags().IntVar(&repeats, "repeats", 20, "timed runs per kernel")
	cmd.Flags().IntVar(&warmup, "warmup", 3, "untimed runs before timing")
	cmd.Flags().StringVar(&jsonPath, "json", "", "write the results as JSON to this file")
	cmd.Flags().StringVar(&plotDir, "plot", "", "write PNG and SVG plots into this directory (which must exist)")
	return cmd
}

// parseShape reads "ROWSxCOLS".
func parseShape(s string) (runtime.Shape, error) {
	r, c, ok := strings.Cut(strings.ToLower(s), "x")
	rows, err1 := strconv.Atoi(r)
	cols, err2 := strconv.Atoi(c)
	if !ok || err1 != nil || err2 != nil || rows <= 0 || cols <= 0 {
		return runtime.Shape{}, fmt.Errorf("--shape %q: want ROWSxCOLS, e.g. 2560x6912", s)
	}
	return runtime.Shape{Rows: rows, Cols: cols}, nil
}

func printKernelTable(w io.Writer, res []runtime.KernelResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kernel\tvariant\tshape\tmedian µs\tmin..max µs\tMB moved\tGB/s\tGOP/s\tvs copy\t")
	for _, r := range res {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%.1f..%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", r.Kernel, r.Variant, r.Shape,
			r.MedianNS/1e3, r.MinNS/1e3, r.MaxNS/1e3, float64(r.Bytes)/1e6, r.GBps, r.GOPs, r.RooflineRatio)
	}
	tw.Flush()
}

// plotKernels draws each kernel's bandwidth against the copy roofline as grouped bars
// (kernels-bandwidth) and each GEMV's time with the ternary speed-up (kernels-time,
// kernelTimeFigure), into the existing directory dir.
func plotKernels(dir string, rep benchReport) error {
	p := plot.New()
	p.Title.Text = "Kernel bandwidth vs copy roofline — " + rep.Device.Name
	p.Y.Label.Text = "GB/s"
	var labels []string
	ternary, f16 := plotter.Values{}, plotter.Values{}
	copyGBps := 0.0
	for _, r := range rep.Kernels {
		switch r.Kernel {
		case "copy":
			copyGBps = r.GBps
		case "ternary_gemv":
			labels = append(labels, r.Shape)
			ternary = append(ternary, r.GBps)
		case "f16_gemv":
			f16 = append(f16, r.GBps)
		}
	}
	w := vg.Points(14)
	bt, err := plotter.NewBarChart(ternary, w)
	if err != nil {
		return err
	}
	bt.LineStyle.Width = 0
	bt.Color = plotter.DefaultLineStyle.Color
	bt.Offset = -w / 2
	bf, err := plotter.NewBarChart(f16, w)
	if err != nil {
		return err
	}
	bf.LineStyle.Width = 0
	bf.Offset = w / 2
	bf.Color = colorGrey
	roof, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: copyGBps}, {X: float64(len(labels)) - 0.5, Y: copyGBps}})
	if err != nil {
		return err
	}
	roof.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(bt, bf, roof)
	p.Legend.Add("ternary GEMV (2-bit)", bt)
	p.Legend.Add("F16 GEMV", bf)
	p.Legend.Add("copy roofline", roof)
	p.Legend.Top = true
	p.Legend.Left = true
	p.Y.Min = 0
	p.Y.Max = copyGBps * 1.3
	p.NominalX(labels...)
	if err := savePlot(p, dir, "kernels-bandwidth"); err != nil {
		return err
	}
	f, _, err := kernelTimeFigure(rep)
	if err != nil {
		return err
	}
	return savePlot(f.Plot, dir, "kernels-time")
}
