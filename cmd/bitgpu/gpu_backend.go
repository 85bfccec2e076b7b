package main

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// verbose is the global --verbose flag: the GPU backend prints its device and memory plan.
var verbose bool

func init() {
	rootCmd.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "print the device and the memory plan (weights, KV cache, scratch) on stderr")
	newGPUBackend = func(m *model.Model, ctx int) (runtime.Backend, error) {
		opts := runtime.GPUOptions{Ctx: ctx, OnDevice: func(d *gpu.Device) { watchValidation(d) }}
		if isTerminal(os.Stderr) {
			opts.Progress = os.Stderr
		}
		g, err := runtime.OpenGPU(m, opts)
		if err != nil {
			return nil, err
		}
		if verbose {
			in := g.Device().Info()
			fmt.Fprintf(os.Stderr, "bitgpu: device %s; memory plan: %s\n", in, g.Plan())
		}
		return g, nil
	}
}

// enableProfile turns on per-kernel timing of the decode steps; --profile needs the GPU backend.
func enableProfile(b runtime.Backend) error {
	g, ok := b.(*runtime.GPU)
	if !ok {
		return fmt.Errorf("--profile: needs the GPU backend (--device gpu with a Vulkan device)")
	}
	return g.EnableProfile()
}

// printProfile writes the per-kernel GPU time per decode step, largest first.
func printProfile(w io.Writer, b runtime.Backend) {
	g, ok := b.(*runtime.GPU)
	if !ok {
		return
	}
	prof := g.Profile()
	var total float64
	for _, k := range prof {
		total += k.NS
	}
	fmt.Fprintf(w, "GPU time per decode step: %.3f ms\n", total/1e6)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kernel\tcalls\tms\tshare\t")
	for _, k := range prof {
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.1f%%\t\n", k.Label, k.Calls, k.NS/1e6, 100*k.NS/total)
	}
	tw.Flush()
}
