package runtime

import (
	"bufio"
	"fmt"
	"os"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bitgpu/bitgpu/cpu"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// CPUInfo names the CPU a CPU benchmark ran on. The field names are gpu.Info's where they apply
// (Name, Type, Driver), so a report's "device" reads alike for both.
type CPUInfo struct {
	Name   string // the "model name" of /proc/cpuinfo, or GOOS/GOARCH where there is none
	Type   string // always "cpu"
	Driver string // the backend: "cpu" or "cpuref"
	Arch   string // GOARCH
	CPUs   int    // logical CPUs (runtime.NumCPU)
	Kernel string // the fast backend's ternary kernel ("avx512vnni", "avx2", "neon-dotprod", "neon" or "lut"); "" for cpuref
}

// String is one line: name, CPU count, backend and kernel.
func (c CPUInfo) String() string {
	s := fmt.Sprintf("%s (%s, %d CPUs), backend %s", c.Name, c.Arch, c.CPUs, c.Driver)
	if c.Kernel != "" {
		s += ", kernel " + c.Kernel
	}
	return s
}

// CPUName returns the first "model name" of /proc/cpuinfo, or GOOS/GOARCH where there is none.
func CPUName() string {
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	return goruntime.GOOS + "/" + goruntime.GOARCH
}

// CopyResult is a memcpy bandwidth measurement on the CPU, with the field names of the GPU copy
// kernel's KernelResult: Go's copy of a CopyBytes buffer into another, split into Threads
// contiguous parts copied at once by Threads goroutines, timed Repeats times after one warm-up
// (median and spread in ns). Bytes counts each byte read and written (2 × the buffer), as the
// GPU copy kernel does, so GBps is read+write bandwidth.
type CopyResult struct {
	Kernel   string  `json:"kernel"`  // "copy"
	Variant  string  `json:"variant"` // "go copy"
	Shape    string  `json:"shape"`   // the buffer size, e.g. "64 MiB"
	Threads  int     `json:"threads"`
	MedianNS float64 `json:"median_ns"`
	MinNS    float64 `json:"min_ns"`
	MaxNS    float64 `json:"max_ns"`
	Bytes    uint64  `json:"bytes"`
	GBps     float64 `json:"gb_per_s"`
}

// BenchCopyCPU measures CopyResult for a buffer of size bytes (0: 64 MiB, more than the last-level
// cache of most CPUs), threads goroutines (< 1 counts as 1) and repeats timed copies (< 1: 5).
// GOMAXPROCS is raised to threads for the measurement when it is lower.
func BenchCopyCPU(size uint64, threads, repeats int) CopyResult {
	if size == 0 {
		size = 64 << 20
	}
	threads = max(threads, 1)
	if repeats < 1 {
		repeats = 5
	}
	if p := goruntime.GOMAXPROCS(0); p < threads {
		defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(threads))
	}
	src, dst := make([]byte, size), make([]byte, size)
	for i := range src {
		src[i] = byte(i)
	}
	once := func() time.Duration {
		var wg sync.WaitGroup
		t0 := time.Now()
		for i := range threads {
			lo, hi := uint64(i)*size/uint64(threads), uint64(i+1)*size/uint64(threads)
			wg.Go(func() { copy(dst[lo:hi], src[lo:hi]) })
		}
		wg.Wait()
		return time.Since(t0)
	}
	once() // warm-up: touches dst's pages
	ns := make([]float64, repeats)
	for i := range ns {
		ns[i] = float64(once().Nanoseconds())
	}
	slices.Sort(ns)
	med := (ns[(len(ns)-1)/2] + ns[len(ns)/2]) / 2
	r := CopyResult{Kernel: "copy", Variant: "go copy", Shape: fmt.Sprintf("%d MiB", size>>20), Threads: threads,
		MedianNS: med, MinNS: ns[0], MaxNS: ns[len(ns)-1], Bytes: 2 * size}
	r.GBps = float64(r.Bytes) / med
	return r
}

// DecodeBytes is what one decode step of a model reads, as BenchE2E and BenchE2ECPU count it:
// Weights, the projections (2 bits a ternary weight, 2 bytes an F16 one) and every RMSNorm vector
// (4 bytes a value, the output norm included); Head, the logits matrix (F16: 2 bytes a weight;
// Q8_0: 1 byte a weight plus the f16 block scales, padded to 4 bytes, as Q8HeadBytes); and
// KVPerToken, the K and V rows of all layers for one token of context (f16). Scales and the one
// embedding row are not counted.
type DecodeBytes struct {
	Weights, Head, KVPerToken uint64
}

// DecodeBytesOf returns the DecodeBytes of configuration c with F16 (f16) or ternary projections
// and the LM head in effect head (cpuref.LMHeadF16 or cpuref.LMHeadQ8_0). Weights+Head equals the
// Weights of the GPU's memory plan (PlanMemoryHead) for the same model less its token-embedding
// table, and KVPerToken its KV cache per token, so the CPU and GPU reports count the same bytes.
func DecodeBytesOf(c model.Config, f16 bool, head cpuref.LMHead) DecodeBytes {
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	proj := uint64(c.Dim*qDim + 2*c.Dim*kvDim + qDim*c.Dim + 3*c.Dim*c.FFNDim)
	if f16 {
		proj *= 2
	} else {
		proj /= 4
	}
	norms := 2 * c.Dim // attn_norm, ffn_norm
	if c.SubNorms {
		norms += qDim + c.FFNDim // attn_sub_norm, ffn_sub_norm
	}
	d := DecodeBytes{
		Weights:    uint64(c.Layers)*(proj+uint64(4*norms)) + uint64(4*c.Dim),
		Head:       uint64(c.VocabSize) * uint64(c.Dim) * 2,
		KVPerToken: uint64(c.Layers) * uint64(kvDim) * 2 * 2,
	}
	if head == cpuref.LMHeadQ8_0 {
		scales := uint64(c.VocabSize) * uint64(c.Dim/model.Q8_0BlockElems) * 2
		d.Head = uint64(c.VocabSize)*uint64(c.Dim) + (scales+3)/4*4
	}
	return d
}

// CPUE2EOptions configure BenchE2ECPU.
type CPUE2EOptions struct {
	Contexts []int // context lengths measured, each >= 1
	Steps    int   // decode steps timed at each context length, >= 1
	// Threads are the thread counts compared (the cpu backend's WithThreads; GOMAXPROCS is set to
	// the count while it runs, which is also what cpuref splits over); empty: GOMAXPROCS.
	Threads []int
	// Rounds: every (context, thread count) is measured Rounds times (< 1: 3), interleaved — one
	// round runs each context at every thread count in turn — so a change in the machine's load
	// falls on all thread counts alike; the figures are medians over the rounds.
	Rounds    int
	Reference bool          // run cpuref instead of the fast backend (package cpu)
	Kernel    cpu.Kernel    // the fast backend's kernel (cpu.KernelAuto: the CPU's best)
	LMHead    cpuref.LMHead // "" is cpuref.DefaultLMHead
	CopyBytes uint64        // the memcpy buffer (0: 64 MiB)
}

// E2ECPUResult is one thread count's end-to-end run of one model on a CPU backend. Its fields
// carry the JSON names of E2EResult where they apply; a CPU step has no dispatches or barriers.
type E2ECPUResult struct {
	Model   string `json:"model"`
	Weights string `json:"weights"` // "ternary" or "f16"
	LMHead  string `json:"lm_head"` // "f16" or "q8_0", the head in effect
	Backend string `json:"backend"` // "cpu" or "cpuref"
	Kernel  string `json:"kernel,omitempty"`
	Threads int    `json:"threads"`
	Rounds  int    `json:"rounds"`
	// CopyGBps is the memcpy bandwidth (BenchCopyCPU) at Threads threads, measured in the same run:
	// the roofline of Points' bandwidth efficiency.
	CopyGBps float64    `json:"copy_gb_per_s"`
	Points   []E2EPoint `json:"points"`
	// DecodeSpeedup[i] is Points[i]'s decode rate over the first thread count's at the same context:
	// the median over rounds of the ratio of the two rates measured next to each other (1 for the
	// first thread count itself).
	DecodeSpeedup []float64 `json:"decode_speedup_vs_first_threads"`
}

// BenchE2ECPU runs m on the CPU backend (package cpu, or cpuref with o.Reference) at every
// thread count of o.Threads, each with a cache of max(o.Contexts)+o.Steps tokens, and for each
// context length L times a prefill of L tokens from an empty cache and then o.Steps decode steps,
// o.Rounds times interleaved (CPUE2EOptions.Rounds). It returns one E2ECPUResult per thread count
// (in o.Threads' order) and the memcpy measurements at those counts. A point's prefill and decode
// rates are the medians over rounds (PrefillRuns = rounds; the decode's min..max spread is over
// every step of every round); DecodeBytesPerToken is DecodeBytesOf's weights and head plus the KV
// cache at L+Steps/2 tokens (the mean context of the steps); DeviceBytes is the weights, the head
// and a KV cache of L+Steps tokens. Token ids are the fixed pseudo-random sequence of BenchE2E.
// Errors: no contexts, Steps < 1, a context < 1 or beyond the model's context length, a thread
// count < 1, and the backend's own (New, Prefill, Decode).
func BenchE2ECPU(m *model.Model, o CPUE2EOptions) ([]E2ECPUResult, []CopyResult, error) {
	if len(o.Contexts) == 0 || o.Steps < 1 {
		return nil, nil, fmt.Errorf("bench e2e: need context lengths and at least one decode step")
	}
	maxL := 0
	for _, l := range o.Contexts {
		if l < 1 {
			return nil, nil, fmt.Errorf("bench e2e: context length %d", l)
		}
		maxL = max(maxL, l)
	}
	if maxL+o.Steps > m.Config.ContextLength {
		return nil, nil, fmt.Errorf("bench e2e: context %d + %d decode steps exceeds the model's %d", maxL, o.Steps, m.Config.ContextLength)
	}
	threads := o.Threads
	if len(threads) == 0 {
		threads = []int{goruntime.GOMAXPROCS(0)}
	}
	for _, t := range threads {
		if t < 1 {
			return nil, nil, fmt.Errorf("bench e2e: %d threads", t)
		}
	}
	rounds := o.Rounds
	if rounds < 1 {
		rounds = 3
	}
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(0))
	f16 := false
	if t := m.Tensors["blk.0.attn_q.weight"]; t != nil && t.Type == model.TypeF16 {
		f16 = true
	}
	type run struct {
		b     Backend
		res   E2ECPUResult
		pre   [][]float64 // [context][round] ms per prompt token
		dec   [][]float64 // [context][round] decode tok/s
		steps [][]float64 // [context] ms of every decode step
	}
	runs := make([]*run, len(threads))
	defer func() {
		for _, r := range runs {
			if r != nil {
				r.b.Close()
			}
		}
	}()
	for i, t := range threads {
		goruntime.GOMAXPROCS(t)
		r := &run{res: E2ECPUResult{Model: m.Path, Weights: "ternary", Threads: t, Rounds: rounds}}
		if f16 {
			r.res.Weights = "f16"
		}
		if o.Reference {
			b, err := cpuref.New(m, maxL+o.Steps, cpuref.WithLMHead(o.LMHead))
			if err != nil {
				return nil, nil, err
			}
			r.b, r.res.Backend, r.res.LMHead = b, "cpuref", string(b.LMHead())
		} else {
			b, err := cpu.New(m, maxL+o.Steps, cpu.WithThreads(t), cpu.WithKernel(o.Kernel), cpu.WithLMHead(o.LMHead))
			if err != nil {
				return nil, nil, err
			}
			r.b, r.res.Backend, r.res.LMHead, r.res.Kernel = b, "cpu", string(b.LMHead()), string(b.Kernel())
		}
		r.pre = make([][]float64, len(o.Contexts))
		r.dec = make([][]float64, len(o.Contexts))
		r.steps = make([][]float64, len(o.Contexts))
		runs[i] = r
	}
	c := runs[0].b.Config()
	tokens := make([]int, maxL+o.Steps)
	for i := range tokens {
		tokens[i] = (i*7919 + 13) % c.VocabSize
	}
	// ratio[i][k][round]: thread count i's decode rate over the first's, context k.
	ratio := make([][][]float64, len(threads))
	for i := range ratio {
		ratio[i] = make([][]float64, len(o.Contexts))
	}
	for round := range rounds {
		for k, L := range o.Contexts {
			for i, r := range runs {
				goruntime.GOMAXPROCS(threads[i])
				if round == 0 && k == 0 { // warm-up: the first steps touch every buffer
					if err := e2eCPUWarm(r.b, tokens[:min(L, 8)+1]); err != nil {
						return nil, nil, err
					}
				}
				r.b.Reset()
				t0 := time.Now()
				if _, err := r.b.Prefill(tokens[:L], false); err != nil {
					return nil, nil, err
				}
				r.pre[k] = append(r.pre[k], time.Since(t0).Seconds()*1e3/float64(L))
				t0 = time.Now()
				for s := range o.Steps {
					t1 := time.Now()
					if _, err := r.b.Decode(tokens[L+s]); err != nil {
						return nil, nil, err
					}
					r.steps[k] = append(r.steps[k], time.Since(t1).Seconds()*1e3)
				}
				r.dec[k] = append(r.dec[k], float64(o.Steps)/time.Since(t0).Seconds())
				ratio[i][k] = append(ratio[i][k], r.dec[k][round]/runs[0].dec[k][round])
			}
		}
	}
	copies := make([]CopyResult, len(threads))
	for i, t := range threads {
		copies[i] = BenchCopyCPU(o.CopyBytes, t, 5)
	}
	res := make([]E2ECPUResult, len(runs))
	for i, r := range runs {
		db := DecodeBytesOf(c, f16, cpuref.LMHead(r.res.LMHead))
		r.res.CopyGBps = copies[i].GBps
		for k, L := range o.Contexts {
			pre, dec := slices.Clone(r.pre[k]), r.dec[k]
			slices.Sort(pre)
			kvBytes := db.KVPerToken * uint64(L+o.Steps/2)
			p := E2EPoint{
				Context:              L,
				PrefillMSPerToken:    median(pre),
				DecodeTokS:           median(dec),
				DeviceBytes:          db.Weights + db.Head + db.KVPerToken*uint64(L+o.Steps),
				DecodeBytesPerToken:  db.Weights + db.Head + kvBytes,
				WeightBytesPerToken:  db.Weights,
				HeadBytesPerToken:    db.Head,
				KVBytesPerToken:      kvBytes,
				PrefillRuns:          rounds,
				PrefillMSPerTokenMin: pre[0],
				PrefillMSPerTokenMax: pre[len(pre)-1],
				DecodeMSPerTokenMin:  slices.Min(r.steps[k]),
				DecodeMSPerTokenMax:  slices.Max(r.steps[k]),
			}
			p.PrefillTokS = 1e3 / p.PrefillMSPerToken
			p.DecodeMSPerToken = 1e3 / p.DecodeTokS
			if r.res.CopyGBps > 0 {
				p.RooflineTokS = r.res.CopyGBps * 1e9 / float64(p.DecodeBytesPerToken)
				p.BandwidthEfficiency = p.DecodeTokS / p.RooflineTokS
			}
			r.res.Points = append(r.res.Points, p)
			r.res.DecodeSpeedup = append(r.res.DecodeSpeedup, median(ratio[i][k]))
		}
		res[i] = r.res
	}
	return res, copies, nil
}

// e2eCPUWarm runs a prefill of all but the last token and a decode of the last one on b (the
// first touches of the scratch and the cache), then resets it.
func e2eCPUWarm(b Backend, tokens []int) error {
	if _, err := b.Prefill(tokens[:len(tokens)-1], false); err != nil {
		return err
	}
	if _, err := b.Decode(tokens[len(tokens)-1]); err != nil {
		return err
	}
	b.Reset()
	return nil
}

// median returns the median of v (the mean of the two middle values for an even count); v must
// not be empty. v is not modified.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}
