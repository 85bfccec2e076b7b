package main

import (
	"fmt"
	"io"
	"path/filepath"
	goruntime "runtime"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// e2eCPUReport is what bench e2e --device cpu|cpuref --json writes: e2eReport's fields where they
// apply. Copy is the memcpy at the largest thread count (the machine's bandwidth), Copies one per
// thread count; each run's efficiency is against its own thread count's copy. Speedup and Memory
// compare the ternary and F16 runs (--baseline) at the first thread count, one value a context.
type e2eCPUReport struct {
	Device  runtime.CPUInfo        `json:"device"`
	Date    string                 `json:"date"`
	Copy    runtime.CopyResult     `json:"copy"`
	Copies  []runtime.CopyResult   `json:"copies"`
	Runs    []runtime.E2ECPUResult `json:"runs"`
	Speedup []float64              `json:"decode_speedup_vs_f16,omitempty"`
	Memory  []float64              `json:"memory_ratio_vs_f16,omitempty"`
	Notes   []string               `json:"notes,omitempty"`
}

// runE2ECPU is bench e2e on a CPU backend (o.device "cpu" or "cpuref"): runtime.BenchE2ECPU of
// every model of o (e2eModels) at o.threads, a table on stdout and the --json report. The F16
// baseline's failure becomes a note when a run succeeded.
func runE2ECPU(cmd *cobra.Command, o e2eOptions) error {
	paths, cleanup, err := e2eModels(cmd, o)
	if err != nil {
		return err
	}
	defer cleanup()
	rep := e2eCPUReport{
		Device: runtime.CPUInfo{Name: runtime.CPUName(), Type: "cpu", Driver: o.device, Arch: goruntime.GOARCH, CPUs: goruntime.NumCPU()},
		Date:   time.Now().UTC().Format(time.RFC3339),
	}
	threads := o.threads
	if len(threads) == 0 {
		threads = []int{goruntime.GOMAXPROCS(0)}
	}
	bo := runtime.CPUE2EOptions{Contexts: o.lengths(), Steps: o.steps, Threads: threads, Rounds: o.rounds,
		Reference: o.device == "cpuref", LMHead: o.head}
	perModel := 0
	for _, p := range paths {
		m, err := model.Open(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "bitgpu: running %s on %s, threads %v, %d rounds\n", filepath.Base(p), o.device, threads, o.rounds)
		rs, copies, err := runtime.BenchE2ECPU(m, bo)
		m.Close()
		if err != nil {
			if len(rep.Runs) > 0 {
				note := fmt.Sprintf("%s: %v", filepath.Base(p), err)
				rep.Notes = append(rep.Notes, note)
				fmt.Fprintf(cmd.ErrOrStderr(), "bitgpu: baseline skipped: %s\n", note)
				continue
			}
			return err
		}
		if rep.Copies == nil {
			rep.Copies = copies
			for _, c := range copies {
				if c.Threads >= rep.Copy.Threads {
					rep.Copy = c
				}
			}
			rep.Device.Kernel = rs[0].Kernel
			perModel = len(rs)
		}
		for _, r := range rs {
			r.Model = filepath.Base(p)
			rep.Runs = append(rep.Runs, r)
		}
	}
	if len(rep.Runs) == 2*perModel {
		t, f := rep.Runs[0], rep.Runs[perModel]
		for i := range t.Points {
			rep.Speedup = append(rep.Speedup, t.Points[i].DecodeTokS/f.Points[i].DecodeTokS)
			rep.Memory = append(rep.Memory, float64(f.Points[i].DeviceBytes)/float64(t.Points[i].DeviceBytes))
		}
	}
	printE2ECPU(cmd.OutOrStdout(), rep)
	if o.jsonPath != "" {
		return writeJSON(o.jsonPath, rep)
	}
	return nil
}

// printE2ECPU writes rep as printE2E does for the GPU: the device and copy bandwidths, one table
// row per run and context, the ternary vs F16 ratios and the notes.
func printE2ECPU(w io.Writer, rep e2eCPUReport) {
	fmt.Fprintf(w, "device: %s\n", rep.Device)
	for _, c := range rep.Copies {
		fmt.Fprintf(w, "copy bandwidth (%s, %d threads): %.2f GB/s\n", c.Shape, c.Threads, c.GBps)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\tweights\tLM head\tthreads\tcontext\tprefill tok/s\tdecode tok/s\tvs first threads\tMiB\tMB read/token (weights+head+KV)\troofline tok/s\tdecode BW eff.\t")
	for _, r := range rep.Runs {
		for i, p := range r.Points {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.2f\t%.2f\t%.2fx\t%.1f\t%.3f (%.3f+%.3f+%.3f)\t%.1f\t%.3f\t\n", r.Model, r.Weights, r.LMHead,
				r.Threads, p.Context, p.PrefillTokS, p.DecodeTokS, r.DecodeSpeedup[i], float64(p.DeviceBytes)/(1<<20),
				float64(p.DecodeBytesPerToken)/1e6, float64(p.WeightBytesPerToken)/1e6, float64(p.HeadBytesPerToken)/1e6,
				float64(p.KVBytesPerToken)/1e6, p.RooflineTokS, p.BandwidthEfficiency)
		}
	}
	tw.Flush()
	for i, s := range rep.Speedup {
		fmt.Fprintf(w, "context %d: ternary vs F16 decode speed-up %.2fx, memory reduction %.2fx (%d threads)\n",
			rep.Runs[0].Points[i].Context, s, rep.Memory[i], rep.Runs[0].Threads)
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}
