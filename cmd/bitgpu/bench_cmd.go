package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/internal/fsutil"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

func init() {
	benchCmd().AddCommand(benchE2ECmd())
}

// benchCmd returns the `bench` command, adding it to the root command the first time (each
// bench file's init adds its subcommands to it, in whatever order the files' inits run).
func benchCmd() *cobra.Command {
	for _, c := range rootCmd.Commands() {
		if c.Name() == "bench" {
			return c
		}
	}
	bench := &cobra.Command{
		Use:   "bench",
		Short: "Kernel and end-to-end benchmarks",
	}
	rootCmd.AddCommand(bench)
	return bench
}

// checkBenchOutputs checks --json FILE and --plot DIR (either may be "": not written) before a
// benchmark runs, so that a bad path fails at once rather than after the timing: FILE's directory
// must exist and FILE be absent or a regular file; DIR must be an existing directory. bitgpu
// creates no directories (`make bench` creates its results directory itself).
func checkBenchOutputs(jsonPath, plotDir string) error {
	if jsonPath != "" {
		if err := checkOutputFile("--json", jsonPath); err != nil {
			return err
		}
	}
	if plotDir != "" {
		return checkOutputDir("--plot", plotDir)
	}
	return nil
}

// writeJSON writes v as indented JSON to the --json file path atomically (writeOutput: temp file
// + rename; a non-regular path is refused, never replaced).
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeOutput("--json", path, func(w io.Writer) error {
		_, err := w.Write(append(data, '\n'))
		return err
	})
}

// e2eOptions are bench e2e's flags, checked (e2eOptions.check) before anything runs.
type e2eOptions struct {
	modelPath, preset, jsonPath, plotDir string
	head                                 cpuref.LMHead // parsed --lm-head
	headFlag                             string
	packing                              runtime.TernaryPacking // parsed --ternary-packing
	packingFlag                          string
	device                               string // gpu, cpu or cpuref
	threads                              []int  // --threads (CPU devices)
	rounds                               int    // --rounds (CPU devices)
	ctx, steps                           int
	baseline                             bool
}

// lengths returns the context lengths bench e2e measures: 64, 128, ... below --ctx, then --ctx.
func (o *e2eOptions) lengths() []int {
	var ls []int
	for l := 64; l < o.ctx; l *= 2 {
		ls = append(ls, l)
	}
	return append(ls, o.ctx)
}

// check validates the flags and fills o.head; errors name the flag.
func (o *e2eOptions) check(cmd *cobra.Command) error {
	if o.ctx < 1 || o.steps < 1 {
		return fmt.Errorf("--ctx %d and --steps %d must be positive", o.ctx, o.steps)
	}
	switch o.device {
	case "gpu":
		for _, f := range []string{"threads", "rounds"} {
			if cmd.Flags().Changed(f) {
				return fmt.Errorf("--%s: only with --device cpu or cpuref", f)
			}
		}
	case "cpu", "cpuref":
		if o.plotDir != "" {
			return fmt.Errorf("--plot: plots are drawn for --device gpu only; use --json with --device %s", o.device)
		}
		if o.rounds < 1 {
			return fmt.Errorf("--rounds %d: must be at least 1", o.rounds)
		}
		for _, t := range o.threads {
			if t < 1 {
				return fmt.Errorf("--threads %d: must be at least 1", t)
			}
		}
	default:
		return fmt.Errorf("--device %q: want gpu, cpu or cpuref", o.device)
	}
	if err := checkBenchOutputs(o.jsonPath, o.plotDir); err != nil {
		return err
	}
	lm, err := cpuref.ParseLMHead(o.headFlag)
	if err != nil {
		return err
	}
	o.head = lm
	if o.packing, err = runtime.ParseTernaryPacking(o.packingFlag); err != nil {
		return err
	}
	if o.device != "gpu" && cmd.Flags().Changed("ternary-packing") {
		return fmt.Errorf("--ternary-packing: only with --device gpu")
	}
	return nil
}

func benchE2ECmd() *cobra.Command {
	var o e2eOptions
	cmd := &cobra.Command{
		Use:   "e2e",
		Short: "Prefill and decode speed and memory against context length, ternary vs F16",
		Long: `Loads a model on the GPU (or, with --device cpu or cpuref, a CPU backend) and, for context
lengths 64, 128, 256, ... up to --ctx, times a prefill from an empty cache and --steps decode steps.
Reports tok/s, memory, and the decode bandwidth efficiency: bytes read per token (every weight once
plus the KV cache) × tok/s ÷ the copy bandwidth measured in the same run (the GPU's copy kernel;
on the CPU a memcpy at the run's thread count). With --preset it writes synthetic models (random
weights are fine for speed) and, with --baseline, runs the same shapes with F16 weights — the
full-precision baseline — and reports the ternary speed-up and memory ratio.

On the CPU, --threads compares thread counts: every context is run at each count in turn, --rounds
times, and the figures are medians over the rounds, so a change in the machine's load falls on all
counts alike; the speed-up column is the median of the per-round ratios to the first count.`,
		Example: "  bitgpu bench e2e --preset tiny\n  bitgpu bench e2e --preset 2b4t --ctx 256 --steps 4 --json e2e.json --plot .\n" +
			"  bitgpu bench e2e -m model.gguf --ctx 512\n  bitgpu bench e2e --device cpu -m assets/bitgpu-tiny.gguf --ctx 128 --steps 64 --threads 1,2 --rounds 9",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(cmd); err != nil {
				return err
			}
			if o.device == "gpu" {
				return runE2EGPU(cmd, o)
			}
			return runE2ECPU(cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.modelPath, "model", "m", "", "model file (default: a synthetic --preset model)")
	f.StringVar(&o.preset, "preset", "tiny", "synthetic model shape when -m is absent: tiny or 2b4t")
	f.IntVar(&o.ctx, "ctx", 256, "largest context length measured")
	f.IntVar(&o.steps, "steps", 8, "decode steps timed at each context length")
	f.StringVar(&o.headFlag, "lm-head", string(cpuref.DefaultLMHead), "logits head of every run: f16 or q8_0 (as for generate)")
	f.StringVar(&o.packingFlag, "ternary-packing", string(runtime.PackingAuto), ternaryPackingHelp)
	f.BoolVar(&o.baseline, "baseline", true, "with --preset, also run the F16-weight baseline")
	f.StringVar(&o.device, "device", "gpu", "gpu (Vulkan), cpu (the fast CPU backend) or cpuref (the CPU reference backend)")
	f.IntSliceVar(&o.threads, "threads", nil, "CPU devices: thread counts to compare, e.g. 1,2 (default: GOMAXPROCS)")
	f.IntVar(&o.rounds, "rounds", 3, "CPU devices: interleaved rounds per context and thread count (medians reported)")
	f.StringVar(&o.jsonPath, "json", "", "write the results as JSON to this file")
	f.StringVar(&o.plotDir, "plot", "", "write PNG and SVG plots into this directory (which must exist; --device gpu)")
	return cmd
}

// e2eModels returns the model files bench e2e runs: -m, or synthetic --preset models written
// into a temporary directory (ternary, then F16 with --baseline) with the context length the
// run needs; cleanup removes the directory (also on SIGINT/SIGTERM).
func e2eModels(cmd *cobra.Command, o e2eOptions) (paths []string, cleanup func(), err error) {
	if o.modelPath != "" {
		return []string{o.modelPath}, func() {}, nil
	}
	dir, forget, err := fsutil.MkdirTemp("", "bitgpu-bench-") // removed on SIGINT/SIGTERM too
	if err != nil {
		return nil, nil, err
	}
	cleanup = func() {
		os.RemoveAll(dir)
		forget()
	}
	types := []model.TensorType{model.TypeI2_S}
	if o.baseline {
		types = append(types, model.TypeF16)
	}
	for _, typ := range types {
		opt, err := model.SynthPreset(o.preset)
		if err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("--preset: %w", err)
		}
		opt.Type, opt.Seed = typ, 1
		opt.Ctx = max(opt.Ctx, slices.Max(o.lengths())+o.steps)
		p := filepath.Join(dir, fmt.Sprintf("%s-%s.gguf", o.preset, typ))
		fmt.Fprintf(cmd.ErrOrStderr(), "bitgpu: writing synthetic %s model (%s)\n", o.preset, typ)
		var done func()
		opt.Progress, done = modelProgress(cmd.ErrOrStderr()) // a bar on a terminal only
		err = model.WriteSynthetic(p, opt)
		done()
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		paths = append(paths, p)
	}
	return paths, cleanup, nil
}
