//go:build cgo

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/internal/fsutil"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

func init() {
	benchCmd().AddCommand(benchE2ECmd())
}

// benchCmd finds the `bench` command.
func benchCmd() *cobra.Command {
	for _, c := range rootCmd.Commands() {
		if c.Name() == "bench" {
			return c
		}
	}
	panic("bench command not registered")
}

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

func benchE2ECmd() *cobra.Command {
	var (
		modelPath, preset, jsonPath, plotDir string
		head                                 string
		ctx, steps                           int
		baseline                             bool
	)
	cmd := &cobra.Command{
		Use:   "e2e",
		Short: "Prefill and decode speed and memory against context length, ternary vs F16",
		Long: `Loads a model on the GPU and, for context lengths 64, 128, 256, ... up to --ctx, times a prefill
from an empty cache and --steps decode steps. Reports tok/s, device memory, and the decode
bandwidth efficiency: bytes read per token (every weight once plus the KV cache) × tok/s ÷ the
copy kernel's GB/s measured in the same run. With --preset it writes synthetic models (random
weights are fine for speed) and, with --baseline, runs the same shapes with F16 weights — the
full-precision baseline — and reports the ternary speed-up and memory ratio.`,
		Example: "  bitgpu bench e2e --preset tiny\n  bitgpu bench e2e --preset 2b4t --ctx 256 --steps 4 --json e2e.json --plot .\n  bitgpu bench e2e -m model.gguf --ctx 512",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if ctx < 1 || steps < 1 {
				return fmt.Errorf("--ctx %d and --steps %d must be positive", ctx, steps)
			}
			if err := checkBenchOutputs(jsonPath, plotDir); err != nil {
				return err
			}
			lm, err := cpuref.ParseLMHead(head)
			if err != nil {
				return err
			}
			var lengths []int // 64, 128, ... below --ctx, then --ctx itself
			for l := 64; l < ctx; l *= 2 {
				lengths = append(lengths, l)
			}
			lengths = append(lengths, ctx)
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
			var paths []string
			if modelPath != "" {
				paths = []string{modelPath}
			} else {
				dir, forget, err := fsutil.MkdirTemp("", "bitgpu-bench-") // removed on SIGINT/SIGTERM too
				if err != nil {
					return err
				}
				defer forget()
				defer os.RemoveAll(dir)
				types := []model.TensorType{model.TypeI2_S}
				if baseline {
					types = append(types, model.TypeF16)
				}
				for _, typ := range types {
					opt, err := model.SynthPreset(preset)
					if err != nil {
						return fmt.Errorf("--preset: %w", err)
					}
					opt.Type, opt.Seed = typ, 1
					if opt.Ctx < ctx+steps {
						opt.Ctx = ctx + steps
					}
					p := filepath.Join(dir, fmt.Sprintf("%s-%s.gguf", preset, typ))
					fmt.Fprintf(cmd.ErrOrStderr(), "bitgpu: writing synthetic %s model (%s)\n", preset, typ)
					var done func()
					opt.Progress, done = modelProgress(cmd.ErrOrStderr()) // a bar on a terminal only
					err = model.WriteSynthetic(p, opt)
					done()
					if err != nil {
						return err
					}
					paths = append(paths, p)
				}
			}
			for _, p := range paths {
				m, err := model.Open(p)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "bitgpu: running %s\n", filepath.Base(p))
				r, err := runtime.BenchE2E(dev, m, lengths, steps, kr[0].GBps, lm)
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
			if jsonPath != "" {
				if err := writeJSON(jsonPath, rep); err != nil {
					return err
				}
			}
			if plotDir != "" {
				return plotE2E(plotDir, rep)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&modelPath, "model", "m", "", "model file (default: a synthetic --preset model)")
	f.StringVar(&preset, "preset", "tiny", "synthetic model shape when -m is absent: tiny or 2b4t")
	f.IntVar(&ctx, "ctx", 256, "largest context length measured")
	f.IntVar(&steps, "steps", 8, "decode steps timed at each context length")
	f.StringVar(&head, "lm-head", string(cpuref.DefaultLMHead), "logits head of every run: f16 or q8_0 (as for generate)")
	f.BoolVar(&baseline, "baseline", true, "with --preset, also run the F16-weight baseline")
	f.StringVar(&jsonPath, "json", "", "write the results as JSON to this file")
	f.StringVar(&plotDir, "plot", "", "write PNG and SVG plots into this directory (which must exist)")
	return cmd
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
