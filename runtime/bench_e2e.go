//go:build cgo

package runtime

import (
	"fmt"
	"slices"
	"time"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
)

// e2ePrefillRuns and e2ePrefillBudget: BenchE2E times a context length's prefill up to
// e2ePrefillRuns times, fewer when the runs so far took e2ePrefillBudget.
const (
	e2ePrefillRuns   = 3
	e2ePrefillBudget = 2 * time.Second
)

// E2EResult is an end-to-end run of one model.
type E2EResult struct {
	Model   string `json:"model"`
	Weights string `json:"weights"` // "ternary" or "f16"
	LMHead  string `json:"lm_head"` // "f16" or "q8_0" (GPU.LMHead)
	// Packing is the ternary projections' device layout in effect: "2bit" or "base3"
	// (GPU.Packing; "" for F16 projections).
	Packing  string     `json:"ternary_packing,omitempty"`
	Plan     MemoryPlan `json:"plan"`
	CopyGBps float64    `json:"copy_gb_per_s"`
	// The recorded decode step (GPU.DecodeStructure): dispatches, pipeline barriers and queue
	// submissions per generated token, the same at every context length.
	DispatchesPerToken int `json:"dispatches_per_token"`
	BarriersPerToken   int `json:"barriers_per_token"`
	SubmitsPerToken    int `json:"submits_per_token"`
	// The recorded greedy decode step (GPU.GreedyStructure; `--temp 0`: the LM head leaves
	// argmax candidates, one more dispatch reduces them, only the token id comes back): its
	// dispatches and pipeline barriers per generated token (its submits are the decode step's).
	GreedyDispatchesPerToken int        `json:"greedy_dispatches_per_token"`
	GreedyBarriersPerToken   int        `json:"greedy_barriers_per_token"`
	Points                   []E2EPoint `json:"points"`
}

// BenchE2E loads m on dev with a cache of max(contexts)+steps tokens and, for each context length
// L, times a prefill of L tokens from an empty cache and then steps decode steps. copyGBps (the
// copy kernel's bandwidth from the same run, BenchKernels) turns bytes per token into a bandwidth
// efficiency. head is the LM head (GPUOptions.LMHead). Token ids are a fixed pseudo-random sequence.
func BenchE2E(dev *gpu.Device, m *model.Model, contexts []int, steps int, copyGBps float64, head cpuref.LMHead) (E2EResult, error) {
	return BenchE2EPacked(dev, m, contexts, steps, copyGBps, head, PackingAuto)
}

// BenchE2EPacked is BenchE2E with the ternary projections in packing (GPUOptions.Packing;
// PackingAuto: the device's default). The bytes per token count the layout in effect.
func BenchE2EPacked(dev *gpu.Device, m *model.Model, contexts []int, steps int, copyGBps float64, head cpuref.LMHead, packing TernaryPacking) (E2EResult, error) {
	if len(contexts) == 0 || steps < 1 {
		return E2EResult{}, fmt.Errorf("bench e2e: need context lengths and at least one decode step")
	}
	maxL := 0
	for _, l := range contexts {
		if l < 1 {
			return E2EResult{}, fmt.Errorf("bench e2e: context length %d", l)
		}
		maxL = max(maxL, l)
	}
	if maxL+steps > m.Config.ContextLength {
		return E2EResult{}, fmt.Errorf("bench e2e: context %d + %d decode steps exceeds the model's %d", maxL, steps, m.Config.ContextLength)
	}
	g, err := NewGPU(dev, m, GPUOptions{Ctx: maxL + steps, LMHead: head, Packing: packing})
	if err != nil {
		return E2EResult{}, err
	}
	defer g.Close()
	res := E2EResult{Model: m.Path, Weights: "ternary", LMHead: string(g.head), Packing: string(g.packing), Plan: g.Plan(), CopyGBps: copyGBps}
	if g.f16 {
		res.Weights, res.Packing = "f16", ""
	}
	c := m.Config
	kvPerToken := uint64(c.Layers) * uint64(c.KVHeads*c.HeadDim) * 2 * 2
	tokens := make([]int, maxL+steps)
	for i := range tokens {
		tokens[i] = (i*7919 + 13) % c.VocabSize
	}
	// Warm up: the first prefill and decode build the attention pipelines and touch every buffer.
	if _, err := g.Prefill(tokens[:contexts[0]], false); err != nil {
		return res, err
	}
	if _, err := g.Decode(tokens[contexts[0]]); err != nil {
		return res, err
	}
	res.DispatchesPerToken, res.BarriersPerToken, res.SubmitsPerToken = g.DecodeStructure()
	g.Reset() // the greedy step, recorded and submitted once (at position 0), for its structure
	if _, err := g.DecodeGreedy(tokens[0]); err != nil {
		return res, err
	}
	res.GreedyDispatchesPerToken, res.GreedyBarriersPerToken, _ = g.GreedyStructure()
	// What a decode step reads: the weights and the head, not the embedding table the device
	// holds for the gather (one row of it a token) — the CPU report's count (DecodeBytesOf).
	db := DecodeBytesOf(c, g.f16, g.head)
	db.Weights -= packingSavings(c, g.f16, g.packing) // the base-3 layout's smaller projections
	for _, L := range contexts {
		// The prefill is timed e2ePrefillRuns times unless that would take more than
		// e2ePrefillBudget (a slow device times it once); the decode steps follow the last one.
		var pres []float64 // ms per prompt token of each run
		var spent time.Duration
		for len(pres) == 0 || (len(pres) < e2ePrefillRuns && spent < e2ePrefillBudget) {
			g.Reset()
			t0 := time.Now()
			if _, err := g.Prefill(tokens[:L], false); err != nil {
				return res, err
			}
			d := time.Since(t0)
			spent += d
			pres = append(pres, d.Seconds()*1e3/float64(L))
		}
		slices.Sort(pres)
		preMS := (pres[(len(pres)-1)/2] + pres[len(pres)/2]) / 2 // the median
		pre := time.Duration(preMS * float64(L) * 1e6)
		stepMS := make([]float64, steps)
		t0 := time.Now()
		for i := 0; i < steps; i++ {
			t1 := time.Now()
			if _, err := g.Decode(tokens[L+i]); err != nil {
				return res, err
			}
			stepMS[i] = time.Since(t1).Seconds() * 1e3
		}
		dec := time.Since(t0)
		p := E2EPoint{
			Context:             L,
			PrefillTokS:         float64(L) / pre.Seconds(),
			PrefillMSPerToken:   pre.Seconds() * 1e3 / float64(L),
			DecodeTokS:          float64(steps) / dec.Seconds(),
			DecodeMSPerToken:    dec.Seconds() * 1e3 / float64(steps),
			DeviceBytes:         PlanMemoryPacked(c, L+steps, g.f16, g.head, g.packing).Total(),
			DecodeBytesPerToken: db.Weights + db.Head + kvPerToken*uint64(L+steps/2),
		}
		p.HeadBytesPerToken = db.Head
		p.WeightBytesPerToken = db.Weights
		p.KVBytesPerToken = kvPerToken * uint64(L+steps/2)
		if copyGBps > 0 {
			p.RooflineTokS = copyGBps * 1e9 / float64(p.DecodeBytesPerToken)
		}
		p.PrefillRuns, p.PrefillMSPerTokenMin, p.PrefillMSPerTokenMax = len(pres), pres[0], pres[len(pres)-1]
		p.DecodeMSPerTokenMin, p.DecodeMSPerTokenMax = slices.Min(stepMS), slices.Max(stepMS)
		if copyGBps > 0 {
			p.BandwidthEfficiency = float64(p.DecodeBytesPerToken) * p.DecodeTokS / (copyGBps * 1e9)
		}
		res.Points = append(res.Points, p)
	}
	return res, nil
}
