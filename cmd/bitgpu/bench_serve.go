package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu"
	"github.com/bitgpu/bitgpu/cpu"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/internal/fsutil"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
	"github.com/bitgpu/bitgpu/runtime/serve"
)

func init() {
	benchCmd().AddCommand(benchServeCmd())
}

// serveBenchOptions are bench serve's flags, checked (serveBenchOptions.check) before anything
// runs.
type serveBenchOptions struct {
	modelPath, preset, device, jsonPath, plotDir string
	concurrency                                  []int
	tokens, promptTokens, ctx, rounds            int
	memoryGiB                                    []float64
	unbatched, fitOnly, f16                      bool
}

// check validates the flags; errors name the flag.
func (o *serveBenchOptions) check() error {
	switch o.device {
	case "cpu", "cpuref", "gpu":
	default:
		return fmt.Errorf("--device %q: want cpu, cpuref or gpu", o.device)
	}
	if o.modelPath != "" && o.preset != "" {
		return fmt.Errorf("-m and --preset: give one (neither: the built-in model)")
	}
	if o.f16 && o.preset == "" {
		return fmt.Errorf("--f16: needs --preset (an F16 model of -m's shapes is the file itself)")
	}
	if len(o.concurrency) == 0 {
		return fmt.Errorf("--concurrency: give at least one count")
	}
	for _, c := range o.concurrency {
		if c < 1 {
			return fmt.Errorf("--concurrency %d: must be at least 1", c)
		}
	}
	if o.tokens < 2 {
		return fmt.Errorf("--tokens %d: must be at least 2 (an inter-token latency needs two tokens)", o.tokens)
	}
	if o.rounds < 1 {
		return fmt.Errorf("--rounds %d: must be at least 1", o.rounds)
	}
	if o.promptTokens < 1 {
		return fmt.Errorf("--prompt-tokens %d: must be at least 1", o.promptTokens)
	}
	if o.ctx < 0 {
		return fmt.Errorf("--ctx %d: must be positive", o.ctx)
	}
	for _, g := range o.memoryGiB {
		if !(g > 0) || math.IsInf(g, 0) {
			return fmt.Errorf("--memory-gib %v: must be a positive number of GiB", g)
		}
	}
	if o.plotDir != "" && o.fitOnly {
		return fmt.Errorf("--plot: plots the runs, which --fit-only skips")
	}
	return checkBenchOutputs(o.jsonPath, o.plotDir)
}

func benchServeCmd() *cobra.Command {
	var o serveBenchOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serving throughput and latency against concurrency, and the batch that fits in memory",
		Long: `Drives the serving engine (runtime/serve, no HTTP) with N concurrent streams for each N of
--concurrency: each stream prefills --prompt-tokens tokens and generates --tokens greedy tokens
(end of text ignored). Reports per concurrency the aggregate decode throughput (generated tokens
after each stream's first ÷ the time from the first stream's first token to the last stream's
end), its speed-up over the first concurrency, time to first token (median and largest),
inter-token latency (p50 and p99 over every stream's gaps) and the decode tokens per forward
pass (1 for sequences stepped one at a time; B when B sequences decode in one batched step).
The engine has max(--concurrency) slots of --ctx tokens (default: prompt + tokens). With
--rounds R every concurrency is run R times, interleaved (one round runs each in turn, so a
change in the machine's load falls on all alike), and the run of median throughput is reported.

Then, from the model's shapes alone, the largest batch that fits the memory: how many sequences
of --ctx tokens (default: the model's context length) have room for their KV cache beside the
weights (as runtime.PlanMemory counts them; scratch not counted) in each --memory-gib budget (default: the system's
memory for the CPU devices), for the ternary weights and for the F16 baseline of the same
shapes; the KV cache of a sequence is the same for both. --fit-only skips the runs (and, with
--preset, writing the model): the figure needs only the shapes.`,
		Example: "  bitgpu bench serve --device cpu --concurrency 1,2,4,8 --tokens 64\n" +
			"  bitgpu bench serve --device cpu --concurrency 1,8 --unbatched\n" +
			"  bitgpu bench serve --device gpu --preset tiny --f16 --concurrency 1,8\n" +
			"  bitgpu bench serve --preset 2b4t --fit-only --memory-gib 6,8,16,24 --json fit.json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			return runServeBench(cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.modelPath, "model", "m", "", "model file (default: the built-in model, or --preset)")
	f.StringVar(&o.preset, "preset", "", "a synthetic model's shape instead of -m: tiny or 2b4t (random weights: speed and memory only)")
	f.StringVar(&o.device, "device", "cpu", "cpu (the fast CPU backend), cpuref (the CPU reference backend) or gpu (Vulkan)")
	f.IntSliceVar(&o.concurrency, "concurrency", []int{1, 2, 4, 8}, "numbers of concurrent streams to measure, in order")
	f.IntVar(&o.tokens, "tokens", 32, "tokens each stream generates")
	f.IntVar(&o.promptTokens, "prompt-tokens", 16, "prompt tokens of each stream")
	f.IntVar(&o.rounds, "rounds", 1, "interleaved rounds over the concurrencies; each reports its median-throughput run")
	f.IntVar(&o.ctx, "ctx", 0, "context of a sequence in tokens: the engine's slots (default: prompt + tokens) and the memory fit (default: the model's context length)")
	f.Float64SliceVar(&o.memoryGiB, "memory-gib", nil, "memory budgets in GiB for the fit table (default: the system memory on cpu/cpuref; none on gpu)")
	f.BoolVar(&o.unbatched, "unbatched", false, "step every sequence alone (serve.Options.Unbatched), to compare with batched steps")
	f.BoolVar(&o.fitOnly, "fit-only", false, "report only the memory fit (no model is run)")
	f.BoolVar(&o.f16, "f16", false, "with --preset: run the F16 baseline of the shapes (F16 projections) instead of ternary")
	f.StringVar(&o.jsonPath, "json", "", "write the results as JSON to this file")
	f.StringVar(&o.plotDir, "plot", "", "write serve-throughput and serve-latency plots (PNG and SVG) into this existing directory")
	return cmd
}

// serveBenchReport is what bench serve --json writes.
type serveBenchReport struct {
	Model        string          `json:"model"`
	Device       string          `json:"device"`
	CPU          string          `json:"cpu,omitempty"`
	Threads      int             `json:"threads,omitempty"`
	Date         string          `json:"date"`
	Batched      bool            `json:"batched"`
	PromptTokens int             `json:"prompt_tokens"`
	Tokens       int             `json:"tokens_per_stream"`
	Rounds       int             `json:"rounds"`
	Context      int             `json:"context"`
	Runs         []serveBenchRun `json:"runs,omitempty"`
	Fit          serveFit        `json:"fit"`
}

// serveBenchRun is one concurrency's measurements. Latencies are in milliseconds.
type serveBenchRun struct {
	Concurrency int     `json:"concurrency"`
	Generated   int     `json:"generated_tokens"`
	DecodeTokS  float64 `json:"decode_tok_per_s"`
	Speedup     float64 `json:"decode_speedup_vs_first"`
	TTFTP50     float64 `json:"ttft_p50_ms"`
	TTFTMax     float64 `json:"ttft_max_ms"`
	ITLP50      float64 `json:"itl_p50_ms"`
	ITLP99      float64 `json:"itl_p99_ms"`
	// DecodeSteps are the decode steps the engine ran (serve.Stats.DecodeTokens), Batched the
	// batched forward passes among them and BatchedTokens their steps; PerForward is
	// DecodeSteps ÷ the forward passes (Batched + DecodeSteps − BatchedTokens).
	PerForward    float64 `json:"decode_tokens_per_forward"`
	DecodeSteps   int64   `json:"decode_steps"`
	Batched       int64   `json:"batched_steps"`
	BatchedTokens int64   `json:"batched_tokens"`
	WallS         float64 `json:"wall_s"`
}

// serveFit is the memory-fit figure: sequences of Context tokens beside the weights.
type serveFit struct {
	Context int `json:"context"`
	// KVBytes is one sequence's KV cache; TernaryBytes and F16Bytes the weights of the ternary
	// model and of its F16 baseline (servePlan).
	KVBytes      uint64          `json:"kv_bytes_per_sequence"`
	TernaryBytes uint64          `json:"ternary_weight_bytes"`
	F16Bytes     uint64          `json:"f16_weight_bytes"`
	Budgets      []serveFitEntry `json:"budgets,omitempty"`
}

// serveFitEntry is the sequences that fit one budget; Ratio is Ternary/F16 (0 when no F16
// sequence fits).
type serveFitEntry struct {
	GiB     float64 `json:"budget_gib"`
	Ternary int     `json:"ternary_sequences"`
	F16     int     `json:"f16_sequences"`
	Ratio   float64 `json:"ratio,omitempty"`
}

// servePlan returns the bytes of cfg's weights — ternary projections (2 bits a weight), or F16
// ones (2 bytes) with f16 — as the GPU's memory plan counts them (runtime.PlanMemory's Weights:
// projections, norms, the default LM head and the F16 token-embedding table unless the F16 head
// is that table), and one sequence's KV cache of ctx tokens (f16 K and V of every layer). It
// needs no cgo (runtime.DecodeBytesOf); a cgo test holds it to runtime.PlanMemory.
func servePlan(cfg model.Config, ctx int, f16 bool) (weights, kv uint64) {
	head := cpuref.DefaultLMHead
	d := runtime.DecodeBytesOf(cfg, f16, head)
	weights = d.Weights + d.Head
	if !cfg.TiedEmbedding || head != cpuref.LMHeadF16 {
		weights += uint64(cfg.VocabSize) * uint64(cfg.Dim) * 2
	}
	return weights, d.KVPerToken * uint64(ctx)
}

// fitSequences is how many KV caches of kv bytes fit beside fixed bytes in budget bytes.
func fitSequences(budget, fixed, kv uint64) int {
	if budget <= fixed || kv == 0 {
		return 0
	}
	return int((budget - fixed) / kv)
}

// memTotal is the system memory in bytes (/proc/meminfo MemTotal), 0 where unknown.
func memTotal() uint64 { return cpuref.MemInfo("MemTotal") }

// serveFitOf computes the fit table of cfg at ctx tokens a sequence for the budgets (GiB).
func serveFitOf(cfg model.Config, ctx int, budgets []float64) serveFit {
	fit := serveFit{Context: ctx}
	fit.TernaryBytes, fit.KVBytes = servePlan(cfg, ctx, false)
	fit.F16Bytes, _ = servePlan(cfg, ctx, true) // the same KV cache
	for _, g := range budgets {
		b := uint64(g * (1 << 30))
		e := serveFitEntry{GiB: g, Ternary: fitSequences(b, fit.TernaryBytes, fit.KVBytes),
			F16: fitSequences(b, fit.F16Bytes, fit.KVBytes)}
		if e.F16 > 0 {
			e.Ratio = float64(e.Ternary) / float64(e.F16)
		}
		fit.Budgets = append(fit.Budgets, e)
	}
	return fit
}

// serveBenchConfig returns the model's name and configuration without running it: -m's header,
// the --preset's shapes, or the built-in model's.
func serveBenchConfig(o serveBenchOptions) (string, model.Config, error) {
	if o.preset != "" {
		opt, err := model.SynthPreset(o.preset)
		if err != nil {
			return "", model.Config{}, fmt.Errorf("--preset: %w", err)
		}
		cfg, err := opt.Config()
		name := "synthetic " + o.preset
		if o.f16 {
			name += " (F16 baseline)"
		}
		return name, cfg, err
	}
	m, err := openModel(o.modelPath)
	if err != nil {
		return "", model.Config{}, err
	}
	defer m.Close()
	return filepath.Base(m.Path), m.Config, nil
}

// runServeBench is bench serve: the runs (unless --fit-only), the fit table, the --json report.
func runServeBench(cmd *cobra.Command, o serveBenchOptions) error {
	name, cfg, err := serveBenchConfig(o)
	if err != nil {
		return err
	}
	rep := serveBenchReport{Model: name, Device: o.device, Date: time.Now().UTC().Format(time.RFC3339),
		Batched: !o.unbatched, PromptTokens: o.promptTokens, Tokens: o.tokens, Rounds: o.rounds}
	if o.device != "gpu" {
		rep.CPU = runtime.CPUName()
	}
	out := cmd.OutOrStdout()
	if !o.fitOnly {
		if err := serveBenchRuns(cmd, o, &rep); err != nil {
			return err
		}
	}
	budgets := o.memoryGiB
	if len(budgets) == 0 && o.device != "gpu" {
		if t := memTotal(); t > 0 {
			budgets = []float64{float64(t) / (1 << 30)}
		}
	}
	fitCtx := o.ctx
	if fitCtx == 0 {
		fitCtx = cfg.ContextLength
	}
	rep.Fit = serveFitOf(cfg, fitCtx, budgets)
	printServeFit(out, name, rep.Fit)
	if o.plotDir != "" {
		if err := plotServe(o.plotDir, rep); err != nil {
			return err
		}
	}
	if o.jsonPath != "" {
		return writeJSON(o.jsonPath, rep)
	}
	return nil
}

// serveBenchRuns opens the model on o.device, starts an engine of max(o.concurrency) slots and
// measures each concurrency in turn (after one warm-up request), printing the table.
func serveBenchRuns(cmd *cobra.Command, o serveBenchOptions, rep *serveBenchReport) error {
	path := o.modelPath
	if o.preset != "" {
		dir, forget, err := fsutil.MkdirTemp("", "bitgpu-bench-serve-")
		if err != nil {
			return err
		}
		defer func() { os.RemoveAll(dir); forget() }()
		opt, _ := model.SynthPreset(o.preset) // checked by serveBenchConfig
		opt.Seed = 1
		if o.f16 {
			opt.Type = model.TypeF16
		}
		path = filepath.Join(dir, o.preset+".gguf")
		fmt.Fprintf(cmd.ErrOrStderr(), "bitgpu: writing synthetic %s model\n", o.preset)
		var done func()
		opt.Progress, done = modelProgress(cmd.ErrOrStderr())
		err = model.WriteSynthetic(path, opt)
		done()
		if err != nil {
			return err
		}
	}
	ctx := o.ctx
	if ctx == 0 {
		ctx = o.promptTokens + o.tokens
	}
	if ctx < o.promptTokens+o.tokens {
		return fmt.Errorf("--ctx %d: a stream needs %d tokens (--prompt-tokens %d + --tokens %d)", ctx, o.promptTokens+o.tokens, o.promptTokens, o.tokens)
	}
	lib, err := bitgpu.Open(path, bitgpu.Options{Device: o.device, Ctx: ctx, Log: cmd.ErrOrStderr()})
	if err != nil {
		return err
	}
	defer lib.Close()
	m, b := lib.Internals()
	if cb, ok := b.(*cpu.Backend); ok {
		rep.Threads = cb.Threads()
	}
	rep.Context = lib.Context()
	n := slices.Max(o.concurrency)
	slots, pool, err := serveSlots(lib, b, n, n*blocksOf(lib.Context())*serve.BlockSize)
	if err != nil {
		return fmt.Errorf("--concurrency %d: %w", n, err)
	}
	defer closeSlots(slots, b, pool)
	eng, err := serve.New(serve.Options{Backends: slots, Tokenizer: m.Tokenizer, Context: lib.Context(), Unbatched: o.unbatched, KVPool: pool})
	if err != nil {
		return err
	}
	defer eng.Shutdown(context.Background())
	prompts := make([][]int, len(slots))
	for i := range prompts {
		p := runtime.EncodePrompt(m.Tokenizer, fmt.Sprintf("Stream %d: %s", i, strings.Repeat("the quick brown fox jumps over the lazy dog ", o.promptTokens)))
		prompts[i] = p[:min(len(p), o.promptTokens)]
	}
	mode := "batched"
	if o.unbatched {
		mode = "unbatched"
	}
	if pool != nil {
		mode += ", one paged KV cache"
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "bitgpu: %s on %s, %d slots of %d tokens, %s; %d prompt tokens and %d generated a stream\n",
		rep.Model, o.device, len(slots), lib.Context(), mode, o.promptTokens, o.tokens)
	if _, err := eng.Submit(context.Background(), serve.Request{Prompt: prompts[0], MaxTokens: 2, IgnoreEOS: true}); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	runs := make([][]serveBenchRun, len(o.concurrency))
	for range o.rounds {
		for i, c := range o.concurrency {
			r, err := serveBenchOne(eng, prompts[:c], o.tokens)
			if err != nil {
				return fmt.Errorf("--concurrency %d: %w", c, err)
			}
			runs[i] = append(runs[i], r)
		}
	}
	for _, rs := range runs {
		slices.SortFunc(rs, func(a, b serveBenchRun) int { return cmp.Compare(a.DecodeTokS, b.DecodeTokS) })
		r := rs[(len(rs)-1)/2]
		if len(rep.Runs) > 0 && rep.Runs[0].DecodeTokS > 0 {
			r.Speedup = r.DecodeTokS / rep.Runs[0].DecodeTokS
		} else {
			r.Speedup = 1
		}
		rep.Runs = append(rep.Runs, r)
	}
	printServeRuns(cmd.OutOrStdout(), rep)
	return nil
}

// serveBenchOne runs one stream per prompt at once, tokens greedy tokens each, and measures them.
func serveBenchOne(eng *serve.Engine, prompts [][]int, tokens int) (serveBenchRun, error) {
	before := eng.Stats()
	type stream struct {
		start time.Time
		res   serve.Result
		err   error
	}
	ss := make([]stream, len(prompts))
	var wg sync.WaitGroup
	t0 := time.Now()
	for i, p := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ss[i].start = time.Now()
			ss[i].res, ss[i].err = eng.Submit(context.Background(), serve.Request{Prompt: p, MaxTokens: tokens, IgnoreEOS: true})
		}()
	}
	wg.Wait()
	wall := time.Since(t0)
	after := eng.Stats()
	r := serveBenchRun{Concurrency: len(prompts), WallS: wall.Seconds()}
	var firstTok, end time.Time
	var ttft, itl []time.Duration
	decoded := 0
	for i, s := range ss {
		if s.err != nil {
			return r, fmt.Errorf("stream %d: %w", i, s.err)
		}
		r.Generated += len(s.res.Tokens)
		decoded += len(s.res.Tokens) - 1
		ft, e := s.start.Add(s.res.FirstToken), s.start.Add(s.res.Total)
		if firstTok.IsZero() || ft.Before(firstTok) {
			firstTok = ft
		}
		if e.After(end) {
			end = e
		}
		ttft = append(ttft, s.res.FirstToken)
		itl = append(itl, s.res.InterToken...)
	}
	if d := end.Sub(firstTok); d > 0 {
		r.DecodeTokS = float64(decoded) / d.Seconds()
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	r.TTFTP50, r.TTFTMax = ms(percentile(ttft, 50)), ms(slices.Max(ttft))
	r.ITLP50, r.ITLP99 = ms(percentile(itl, 50)), ms(percentile(itl, 99))
	r.DecodeSteps = after.DecodeTokens - before.DecodeTokens
	r.Batched = after.BatchedSteps - before.BatchedSteps
	r.BatchedTokens = after.BatchedTokens - before.BatchedTokens
	if forwards := r.Batched + r.DecodeSteps - r.BatchedTokens; forwards > 0 {
		r.PerForward = float64(r.DecodeSteps) / float64(forwards)
	}
	return r, nil
}

// percentile is the nearest-rank p-th percentile of ds (0 for none); it sorts ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(math.Ceil(p/100*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// printServeRuns writes the concurrency table.
func printServeRuns(w io.Writer, rep *serveBenchReport) {
	fmt.Fprintf(w, "%s on %s", rep.Model, rep.Device)
	if rep.CPU != "" {
		fmt.Fprintf(w, " (%s, %d threads of %d CPUs)", rep.CPU, rep.Threads, goruntime.NumCPU())
	}
	mode := "batched decode steps"
	if !rep.Batched {
		mode = "unbatched (one sequence a step)"
	}
	fmt.Fprintf(w, ", %s; %d prompt + %d generated tokens a stream", mode, rep.PromptTokens, rep.Tokens)
	if rep.Rounds > 1 {
		fmt.Fprintf(w, "; median of %d rounds", rep.Rounds)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streams\tdecode tok/s\tspeed-up\tTTFT p50 ms\tTTFT max ms\tITL p50 ms\tITL p99 ms\ttokens/forward\t")
	for _, r := range rep.Runs {
		fmt.Fprintf(tw, "%d\t%.1f\t%.2f×\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t\n", r.Concurrency, r.DecodeTokS, r.Speedup,
			r.TTFTP50, r.TTFTMax, r.ITLP50, r.ITLP99, r.PerForward)
	}
	tw.Flush()
}

// printServeFit writes the memory-fit table.
func printServeFit(w io.Writer, name string, fit serveFit) {
	gib := func(b uint64) float64 { return float64(b) / (1 << 30) }
	fmt.Fprintf(w, "largest batch that fits: %s, sequences of %d tokens (KV cache %.1f MiB each) beside the weights: ternary %.2f GiB, F16 %.2f GiB\n",
		name, fit.Context, float64(fit.KVBytes)/(1<<20), gib(fit.TernaryBytes), gib(fit.F16Bytes))
	if len(fit.Budgets) == 0 {
		fmt.Fprintln(w, "no memory budget: pass --memory-gib")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "memory GiB\tternary sequences\tF16 sequences\tternary/F16\t")
	for _, e := range fit.Budgets {
		ratio := "∞ (F16 does not fit)"
		if e.F16 > 0 {
			ratio = fmt.Sprintf("%.1f×", e.Ratio)
		}
		fmt.Fprintf(tw, "%.1f\t%d\t%d\t%s\t\n", e.GiB, e.Ternary, e.F16, ratio)
	}
	tw.Flush()
}
