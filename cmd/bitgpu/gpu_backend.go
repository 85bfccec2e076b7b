//go:build cgo

package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/bitgpu/bitgpu/runtime"
)

// haveVulkan reports whether this build has the Vulkan backend.
const haveVulkan = true

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
