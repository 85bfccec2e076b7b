//go:build cgo

package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// e2eReport is what bench e2e --json writes.
type e2eReport struct {
	Device  gpu.Info             `json:"device"`
	Date    string               `json:"date"`
	Copy    runtime.KernelResult `json:"copy"`
	Runs    []runtime.E2EResult  `json:"runs"`
	Speedup []float64            `json:"decode_speedup_vs_f16,omitempty"`
	Memory  []float64            `json:"memory_ratio_vs_f16,omitempty"`
	Notes   []string             `json:"notes,omitempty"`
}

// runE2EGPU is bench e2e on the GPU: the copy kernel's bandwidth (BenchKernels), then
// runtime.BenchE2E of every model of o (e2eModels), a table on stdout, and the --json and --plot
// outputs. The F16 baseline's failure (it may not fit) becomes a note when a run succeeded.
func runE2EGPU(cmd *cobra.Command, o e2eOptions) (err error) {
	dev, err := gpu.Open(gpu.OptionsFromEnv())
	if err != nil {
		return err
	}
	watchValidation(dev)
	defer closeInto(&err, dev)
	kr, err := runtime.BenchKernels(dev, runtime.BenchOptions{Repeats: 5, Warmup: 1})
	if err != nil {
		return err
	}
	rep := e2eReport{Device: dev.Info(), Date: time.Now().UTC().Format(time.RFC3339), Copy: kr[0]}
	paths, cleanup, err := e2eModels(cmd, o)
	if err != nil {
		return err
	}
	defer cleanup()
	for _, p := range paths {
		m, err := model.Open(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "bitgpu: running %s\n", filepath.Base(p))
		r, err := runtime.BenchE2EPacked(dev, m, o.lengths(), o.steps, kr[0].GBps, o.head, o.packing)
		m.Close()
		if err != nil {
			if len(rep.Runs) > 0 && !errors.Is(err, gpu.ErrNoDevice) {
				note := fmt.Sprintf("%s: %v", filepath.Base(p), err)
				rep.Notes = append(rep.Notes, note)
				fmt.Fprintf(cmd.ErrOrStderr(), "bitgpu: baseline skipped: %s\n", note)
				continue
			}
			return err
		}
		r.Model = filepath.Base(p)
		rep.Runs = append(rep.Runs, r)
	}
	if len(rep.Runs) == 2 {
		for i := range rep.Runs[0].Points {
			t, f := rep.Runs[0].Points[i], rep.Runs[1].Points[i]
			rep.Speedup = append(rep.Speedup, t.DecodeTokS/f.DecodeTokS)
			rep.Memory = append(rep.Memory, float64(f.DeviceBytes)/float64(t.DeviceBytes))
		}
	}
	printE2E(cmd.OutOrStdout(), rep)
	if o.jsonPath != "" {
		if err := writeJSON(o.jsonPath, rep); err != nil {
			return err
		}
	}
	if o.plotDir != "" {
		return plotE2E(o.plotDir, rep)
	}
	return nil
}

func printE2E(w io.Writer, rep e2eReport) {
	fmt.Fprintf(w, "device: %s; copy bandwidth %.2f GB/s\n", rep.Device, rep.Copy.GBps)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\tweights\tLM head\tcontext\tprefill tok/s\tdecode tok/s\tdevice MiB\tMB read/token (weights+head+KV)\troofline tok/s\tdecode BW eff.\t")
	for _, r := range rep.Runs {
		for _, p := range r.Points {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.2f\t%.2f\t%.1f\t%.2f (%.2f+%.2f+%.2f)\t%.1f\t%.3f\t\n", r.Model, r.Weights, r.LMHead, p.Context, p.PrefillTokS, p.DecodeTokS,
				float64(p.DeviceBytes)/(1<<20), float64(p.DecodeBytesPerToken)/1e6, float64(p.WeightBytesPerToken)/1e6,
				float64(p.HeadBytesPerToken)/1e6, float64(p.KVBytesPerToken)/1e6, p.RooflineTokS, p.BandwidthEfficiency)
		}
	}
	tw.Flush()
	for _, r := range rep.Runs {
		fmt.Fprintf(w, "%s (%s): %d dispatches, %d barriers, %d submits per decode token\n", r.Model, r.Weights,
			r.DispatchesPerToken, r.BarriersPerToken, r.SubmitsPerToken)
		if r.GreedyDispatchesPerToken > 0 {
			fmt.Fprintf(w, "%s (%s): %d dispatches, %d barriers per greedy decode token (argmax on the device)\n", r.Model, r.Weights,
				r.GreedyDispatchesPerToken, r.GreedyBarriersPerToken)
		}
	}
	for i, s := range rep.Speedup {
		fmt.Fprintf(w, "context %d: ternary vs F16 decode speed-up %.2fx, memory reduction %.2fx\n", rep.Runs[0].Points[i].Context, s, rep.Memory[i])
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// e2ePlots are the plots plotE2E writes: file name, title, Y label and the plotted quantity
// (with its min–max spread where it has one).
var e2ePlots = []struct {
	name, title, ylabel string
	y                   func(runtime.E2EPoint) spread
}{
	{"e2e-decode-latency", "Decode latency vs context (mean, min–max step)", "ms per token", func(p runtime.E2EPoint) spread {
		return spread{p.DecodeMSPerToken, p.DecodeMSPerTokenMin, p.DecodeMSPerTokenMax}
	}},
	{"e2e-prefill-latency", "Prefill latency vs context (median, min–max run)", "ms per prompt token", func(p runtime.E2EPoint) spread {
		return spread{p.PrefillMSPerToken, p.PrefillMSPerTokenMin, p.PrefillMSPerTokenMax}
	}},
	{"e2e-memory", "Device memory vs context", "MiB", func(p runtime.E2EPoint) spread {
		m := float64(p.DeviceBytes) / (1 << 20)
		return spread{m, m, m}
	}},
}

// plotE2E draws decode and prefill latency and device memory against context length, one line
// per run (e2eFigure: log-2 axis, a tick per measured length, min–max error bars), into the
// existing directory dir.
func plotE2E(dir string, rep e2eReport) error {
	for _, e := range e2ePlots {
		f, err := e2eFigure(rep, e.title, e.ylabel, e.y)
		if err != nil {
			return err
		}
		if err := savePlot(f.Plot, dir, e.name); err != nil {
			return err
		}
	}
	return nil
}
