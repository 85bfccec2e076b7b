//go:build cgo

package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"

	"github.com/schollz/progressbar/v3"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
)

// MaxBatch is the most tokens one prefill submission processes; longer prompts run in chunks.
const MaxBatch = 64

// GPUOptions configure NewGPU.
type GPUOptions struct {
	// Ctx is the KV-cache capacity in tokens (<= 0: the model's context length).
	Ctx int
	// Progress, when not nil, receives a progress bar while the weights upload.
	Progress io.Writer
	// OnDevice, when not nil, is called by OpenGPU with the device it opened, before the model
	// loads, so the caller can read the device's validation log (gpu.Device.ValidationMessages,
	// which outlives Close) even when loading fails and the device is closed again.
	OnDevice func(*gpu.Device)
	// LMHead is the logits head (`--lm-head`): cpuref.LMHeadF16 (the F16 matrix, f16_matvec) or
	// cpuref.LMHeadQ8_0 (re-quantized to Q8_0 at load, q8_matvec on the int8 output norm); ""
	// means cpuref.DefaultLMHead. A file whose logits matrix is already Q8_0 always runs q8_0.
	LMHead cpuref.LMHead
	// Packing is the device layout of the ternary projections (`--ternary-packing`):
	// Packing2Bit, PackingBase3 (matrices whose columns are not a multiple of 256 stay 2-bit),
	// or PackingAuto / "" for the device's default (packingTable). Every layout gives the same
	// bits; base-3 reads 18.75 % fewer weight bytes per token.
	Packing TernaryPacking
	// LoRA are the adapters to apply, in order (cpuref.AttachLoRA, cpuref.ApplyLoRA), each at
	// its Scale until SetLoRAScales changes them.
	LoRA []cpuref.Adapter
	// wideLoads makes a device read its 2-bit ternary matrices as 128-bit loads even where
	// packingTable says not to (TernaryWeights.WideLoads), so the tests run that path too.
	wideLoads bool
	// fuseNorms makes a CPU device fuse the decode step's norms too (fusedDecodeNorms), so
	// the tests run that path on lavapipe and SwiftShader.
	fuseNorms bool
}

// GPU is the Vulkan Backend: the model's weights in device memory (ternary projections repacked
// to 2 bits a weight, or 1.625 in the base-3 layout of GPUOptions.Packing, norms f32, the logits matrix — output.weight, or the tied token embedding —
// F16 or, with the q8_0 LM head, Q8_0, in row chunks), an f16 KV cache, and a
// decode step recorded once and replayed for every token. It implements Backend and is not safe
// for concurrent use.
type GPU struct {
	cfg     model.Config
	dev     *gpu.Device
	ownsDev bool
	ks      *Kernels
	attn    *AttentionKernels
	ctx     int
	pos     int
	closed  bool

	embdHost *model.Tensor // token_embd as mapped from the file: the host gather when embd is nil
	out      *F16Matrix    // logits matrix on the device: output.weight, or token_embd when tied
	outQ8    *Q8Matrix     // the same as Q8_0, instead of out, for the q8_0 head
	head     cpuref.LMHead // the head in effect (effectiveHead)
	outNorm  *gpu.Buffer
	layers   []gpuLayer
	rope     *gpu.Buffer
	plan     MemoryPlan

	// packing is the ternary layout in effect (resolvePacking): 2bit or base3; wideLoads, whether
	// 2-bit matrices are read 128 bits a lane (packingTable, GPUOptions.wideLoads).
	packing   TernaryPacking
	wideLoads bool

	// Activations for up to MaxBatch tokens; nil where the model's recorded steps do not use them
	// (allocScratch: k, v, up, normed, xn, qa, sq).
	x, q, k, v, att, gate, up, xn *gpu.Buffer
	normed                        *gpu.Buffer // [MaxBatch][widest] f32 inputs of F16 projections
	f16                           bool        // projections are F16 (the full-precision baseline)
	qa, sq                        *gpu.Buffer
	logits                        *gpu.Buffer // host-visible [MaxBatch][vocab]
	attnScratch                   *gpu.Buffer

	decode    *gpu.Sequence // the recorded one-token step
	embedRows []float32     // host staging of the input embeddings, reused every call

	// embd is token_embd on the device for the embed_gather step (nil for block-quantized tables,
	// which the host gathers); embdShared when its chunks are out's (the tied F16 head), not its own.
	embd       *EmbedTable
	embdShared bool
	tokens     *gpu.Buffer // host-visible [MaxBatch] uint32: the step's token ids, embed_gather's input
	tokenIDs   []uint32    // host staging of the token ids, reused every call
	fuseNorms  bool        // decode fuses the norms into the GEMVs after them (fusedDecodeNorms)
	noCache    bool        // DropOwnCache released the own KV cache

	// Greedy decoding on the device (DecodeGreedy): no logits are written; the LM head's
	// workgroups leave argmax candidates in greedyLogits (8 bytes a head workgroup:
	// Q8Matrix/F16Matrix.ArgmaxCandidates; named for the logits it once held), argmax_reduce
	// picks the token, and only its id comes back (tokenOut).
	greedySeq    *gpu.Sequence
	greedyLogits *gpu.Buffer
	tokenOut     *gpu.Buffer
	greedyRec    bool // recordForwardOn is recording the greedy step (recordGreedy)
	greedySteps  int  // tokens DecodeGreedy ran through the on-device argmax
	// Sampling from candidates selected on the device (DecodeCandidates, gpu_candidates.go).
	cand *gpuCandidates
	// lora holds the LoRA adapters (GPUOptions.LoRA, lora_gpu.go); nil without them.
	lora *gpuLoRA
	// candSteps counts the DecodeCandidates steps of candidate steps rerecord dropped.
	candSteps int

	// Profiling (EnableProfile): a second recorded step with timestamps between the ops.
	profSeq   *gpu.Sequence
	profTimer *gpu.Timer
	// greedyTimer times the on-device greedy step (forward + argmax) when profiling is on.
	greedyTimer *gpu.Timer
	profTotals  map[string]*KernelTime
	profSteps   int
}

type gpuLayer struct {
	attnNorm, attnSubNorm, ffnNorm, ffnSubNorm *gpu.Buffer
	q, k, v, o, gate, up, down                 projection
	// Ternary models stack q, k and v (qkv) and gate and up (gateUp, interleaved for the fused
	// GLU) into one matrix each, one dispatch each; q, k, v, gate and up are then empty. F16
	// models keep the separate projections.
	qkv, gateUp    projection
	kCache, vCache *gpu.Buffer
}

// projection is one weight matrix on the device: ternary (2 bits a weight, a BitLinear on int8
// activations) or, for the full-precision baseline of `bitgpu bench`, F16 on f32 activations.
type projection struct {
	tern *TernaryWeights
	f16  *F16Matrix
}

func (p projection) buffers() []*gpu.Buffer {
	if p.tern != nil {
		return []*gpu.Buffer{p.tern.Buf.Buf}
	}
	var bs []*gpu.Buffer
	if p.f16 != nil {
		for _, c := range p.f16.Chunks {
			bs = append(bs, c.Buf.Buf)
		}
	}
	return bs
}

// NewGPU uploads m to dev and records the decode step. It checks the memory plan against the
// device's heaps first and returns an error naming both sizes when the model does not fit; shapes
// the GPU path does not support (widths not multiples of 16) are errors naming the tensor. A TQ
// tensor whose blocks carry different scales also stores its per-block f32 scales (4 bytes per
// 256 weights), added to Plan().Weights. The ternary projections take opts.Packing's layout
// (PackingAuto: packingTable's choice for dev), which Plan counts (PlanMemoryPacked); an
// unknown packing is an error naming --ternary-packing. The device stays owned by the caller.
func NewGPU(dev *gpu.Device, m *model.Model, opts GPUOptions) (*GPU, error) {
	cfg := m.Config
	ctx := opts.Ctx
	if ctx <= 0 {
		ctx = cfg.ContextLength
	}
	if ctx <= 0 || ctx > cfg.ContextLength {
		return nil, fmt.Errorf("--ctx %d: must be in [1, %d] (the model's context length)", ctx, cfg.ContextLength)
	}
	if cfg.Dim%16 != 0 || cfg.FFNDim%16 != 0 || cfg.HeadDim%2 != 0 {
		return nil, fmt.Errorf("%s: widths dim %d, ffn %d must be multiples of 16 and head dim %d even on the GPU", m.Path, cfg.Dim, cfg.FFNDim, cfg.HeadDim)
	}
	f16 := false
	if t := m.Tensors["blk.0.attn_q.weight"]; t != nil && t.Type == model.TypeF16 {
		f16 = true
	}
	head, err := effectiveHead(m, opts.LMHead)
	if err != nil {
		return nil, err
	}
	packing, err := ParseTernaryPacking(string(opts.Packing))
	if err != nil {
		return nil, err
	}
	packing = resolvePacking(packing, dev.Info())
	g := &GPU{cfg: cfg, dev: dev, ctx: ctx, f16: f16, head: head, packing: packing, plan: PlanMemoryPacked(cfg, ctx, f16, head, packing)}
	g.wideLoads = opts.wideLoads || deviceRule(dev.Info()).WideLoads
	if g.lora, err = newGPULoRA(cfg, opts.LoRA); err != nil {
		return nil, err
	}
	g.plan.LoRA = g.lora.bytes(cfg, f16)
	if e := m.Tensors["token_embd.weight"]; e != nil { // the plan assumed a tied or separate F16 table
		shared := head == cpuref.LMHeadF16 && (cfg.TiedEmbedding || m.Tensors["output.weight"] == nil) && e.Type == model.TypeF16
		g.plan.Weights = g.plan.Weights - planEmbedBytes(cfg, head) + deviceEmbedBytes(e.Type, cfg.VocabSize, cfg.Dim, shared)
	}
	if g.fuseNorms, err = fusedDecodeNorms(dev.Info().Type, opts.fuseNorms, os.Getenv("BITGPU_FUSED_NORMS")); err != nil {
		return nil, err
	}
	var heap uint64
	for _, h := range dev.Info().Heaps {
		if h.DeviceLocal {
			heap = max(heap, h.Size)
		}
	}
	if heap > 0 && g.plan.Total() > heap {
		return nil, planRefusal(m.Path, dev.Info().Name, cfg, ctx, f16, head, g.plan, heap)
	}
	ks, err := NewKernels(dev)
	if err != nil {
		return nil, err
	}
	g.ks = ks
	g.attn = NewAttentionKernels(dev)
	// The weights are read from the memory-mapped file: a fault there (the file shrank) is an error.
	if err := model.CatchFault(func() error { return g.upload(m, opts.Progress) }); err != nil {
		g.Close()
		return nil, err
	}
	if err := g.allocScratch(); err != nil {
		g.Close()
		return nil, err
	}
	if err := g.uploadLoRA(); err != nil {
		g.Close()
		return nil, err
	}
	if g.decode, err = g.record(1, nil); err != nil {
		g.Close()
		return nil, err
	}
	if err = g.warm(); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

// warm builds, at load, the pipelines the first prefill (a GEMMTokens-token step, recorded and
// released) and the first greedy step (the heads' argmax kernels, argmax_reduce) dispatch besides
// the decode step's, so that no pipeline compiles while a step is timed (Kernels builds them on
// first use).
func (g *GPU) warm() error {
	s, err := g.record(GEMMTokens, nil)
	if err != nil {
		return err
	}
	s.Release()
	names := []string{"argmax_reduce", "f16_gemv_argmax"}
	if g.outQ8 != nil {
		names = []string{"argmax_reduce", "q8_gemv_argmax", "q8_gemv_norm_argmax"}
	}
	for _, n := range names {
		if _, err := g.ks.kernel(n); err != nil {
			return err
		}
	}
	return nil
}

// DecodeStructure counts what one recorded decode step submits: its dispatches and pipeline
// barriers (dependent stages), and the queue submissions a Decode makes — 1 (the token id goes
// into a host-visible buffer and the step gathers its embedding), plus 1 when the host gathers
// the input row (block-quantized embeddings) and uploads it through the staging buffer
// (device-local memory the host cannot map). All 0 after DropOwnCache.
func (g *GPU) DecodeStructure() (dispatches, barriers, submits int) {
	if g.decode == nil { // DropOwnCache: no step recorded
		return 0, 0, 0
	}
	submits = 1
	if g.embd == nil && !g.x.HostVisible() {
		submits++
	}
	return g.decode.Dispatches(), g.decode.Barriers(), submits
}

// Plan reports the device memory the backend allocated.
func (g *GPU) Plan() MemoryPlan { return g.plan }

// Device is the device the backend runs on.
func (g *GPU) Device() *gpu.Device { return g.dev }

func (g *GPU) upload(m *model.Model, progress io.Writer) error {
	c := &g.cfg
	get := func(name string) (*model.Tensor, error) {
		t, ok := m.Tensors[name]
		if !ok {
			return nil, fmt.Errorf("%s: missing tensor %s", m.Path, name)
		}
		return t, nil
	}
	var bar *progressbar.ProgressBar
	if progress != nil {
		bar = progressbar.NewOptions64(int64(g.plan.Weights), progressbar.OptionSetWriter(progress),
			progressbar.OptionSetDescription("uploading weights"), progressbar.OptionShowBytes(true),
			progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100_000_000))
		defer bar.Finish()
	}
	advance := func(n uint64) {
		if bar != nil {
			bar.Add64(int64(n))
		}
	}
	norm := func(name string, n int) (*gpu.Buffer, error) {
		t, err := get(name)
		if err != nil {
			return nil, err
		}
		v := make([]float32, n)
		if err := model.FloatRow(t, 0, v); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		advance(uint64(4 * n))
		return gpu.NewBufferFrom(g.dev, v)
	}
	uploadTernary := func(name string, t *model.Tensor) (*TernaryWeights, error) {
		tm, err := model.NewTernaryMatrix(t)
		if err != nil {
			return nil, err
		}
		words, scale, blocks, err := RepackTernaryBlocks(tm)
		if err != nil {
			return nil, err
		}
		off := uint32(0)
		if blocks != nil { // per-block scales after the trit words (ternary_matmul.comp's block path)
			off = uint32(len(words))
			for _, sc := range blocks {
				words = append(words, gpu.F32(sc))
			}
			g.plan.Weights += uint64(4 * len(blocks))
		}
		tw := &TernaryWeights{Name: name, Rows: uint32(tm.Rows), Cols: uint32(tm.Cols), Scale: scale, OutScale: m.WeightScale(name), BlockScales: off}
		if words, err = g.pack(words, tw); err != nil {
			return nil, err
		}
		b, err := gpu.NewBufferFrom(g.dev, words)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		tw.Buf = b.Whole()
		return tw, nil
	}
	ternary := func(name string, cols, rows int) (projection, error) {
		t, err := get(name)
		if err != nil {
			return projection{}, err
		}
		if (t.Type == model.TypeF16) != g.f16 {
			return projection{}, fmt.Errorf("tensor %s: type %s; the GPU backend needs every projection ternary, or every one F16", name, t.Type)
		}
		if g.f16 {
			if len(t.Shape) != 2 || t.Shape[0] != uint64(cols) || t.Shape[1] != uint64(rows) {
				return projection{}, fmt.Errorf("tensor %s: shape %v, want [%d, %d]", name, t.Shape, cols, rows)
			}
			f, err := g.uploadF16(t, rows, cols)
			advance(uint64(len(t.Data)))
			return projection{f16: f}, err
		}
		tw, err := uploadTernary(name, t)
		if err != nil {
			return projection{}, err
		}
		if tw.Rows != uint32(rows) || tw.Cols != uint32(cols) {
			// Returned with the error so Close releases the uploaded buffer.
			return projection{tern: tw}, fmt.Errorf("tensor %s: shape [%d, %d], want [%d, %d]", name, tw.Cols, tw.Rows, cols, rows)
		}
		advance(tw.Bytes())
		return projection{tern: tw}, nil
	}
	// stacked uploads tensors names (rows[i] x cols each) as one matrix (StackTernary; q, k and v
	// in StackTernaryRoPE's order when the head shape allows, for the fused RoPE/KV store).
	stacked := func(name string, names []string, rows []int, cols int, interleave bool) (projection, error) {
		mats := make([]*model.TernaryMatrix, len(names))
		outScales := make([]float32, len(names))
		for i, n := range names {
			t, err := get(n)
			if err != nil {
				return projection{}, err
			}
			if t.Type == model.TypeF16 {
				return projection{}, fmt.Errorf("tensor %s: type %s; the GPU backend needs every projection ternary, or every one F16", n, t.Type)
			}
			if mats[i], err = model.NewTernaryMatrix(t); err != nil {
				return projection{}, err
			}
			if mats[i].Rows != rows[i] || mats[i].Cols != cols {
				return projection{}, fmt.Errorf("tensor %s: shape [%d, %d], want [%d, %d]", n, mats[i].Cols, mats[i].Rows, cols, rows[i])
			}
			outScales[i] = m.WeightScale(n)
		}
		var words []uint32
		var tw *TernaryWeights
		var err error
		if len(mats) == 3 && RoPEFusable(c.HeadDim, c.RoPEDim) { // q, k, v: rows ordered for the fused RoPE/KV store
			words, tw, err = StackTernaryRoPE(name, mats, outScales, c.HeadDim, c.RoPEDim, c.RoPEMode)
		} else {
			words, tw, err = StackTernary(name, mats, outScales, interleave)
		}
		if err != nil {
			return projection{}, err
		}
		if tw.BlockScales != 0 { // per-block scales after the trit words
			g.plan.Weights += uint64(4 * (len(words) - int(tw.BlockScales)))
		}
		if words, err = g.pack(words, tw); err != nil {
			return projection{}, err
		}
		b, err := gpu.NewBufferFrom(g.dev, words)
		if err != nil {
			return projection{}, fmt.Errorf("tensor %s: %w", name, err)
		}
		tw.Buf = b.Whole()
		advance(tw.Bytes())
		return projection{tern: tw}, nil
	}
	embd, err := get("token_embd.weight")
	if err != nil {
		return err
	}
	g.embdHost = embd
	out := embd
	if o, ok := m.Tensors["output.weight"]; ok && o != nil && !c.TiedEmbedding {
		out = o
	}
	if g.head == cpuref.LMHeadQ8_0 {
		if g.outQ8, err = NewQ8Matrix(g.dev, out, c.VocabSize, c.Dim); err != nil {
			return err
		}
	} else if out, err = cpuref.OutputMatrix(out, cpuref.LMHeadF16); err != nil { // Q4_K/Q6_K: to F16
		return err
	} else if out.Type != model.TypeF16 {
		return fmt.Errorf("tensor %s: type %s, the GPU's f16 LM head needs F16 (--lm-head q8_0 takes any float type)", out.Name, out.Type)
	} else if g.out, err = g.uploadF16(out, c.VocabSize, c.Dim); err != nil {
		return err
	}
	advance(uint64(len(out.Data)))
	if err := g.uploadEmbedding(embd, out); err != nil {
		return err
	}
	if g.embd != nil && !g.embdShared {
		advance(uint64(c.VocabSize) * uint64(c.Dim) * embedElemBytes(embd.Type))
	}
	if g.outNorm, err = norm("output_norm.weight", c.Dim); err != nil {
		return err
	}
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	for i := 0; i < c.Layers; i++ {
		p := fmt.Sprintf("blk.%d.", i)
		// Filled in place, so Close releases what a failed (or faulting) upload left behind.
		g.layers = append(g.layers, gpuLayer{})
		l := &g.layers[len(g.layers)-1]
		steps := []func() error{
			func() (err error) { l.attnNorm, err = norm(p+"attn_norm.weight", c.Dim); return },
			func() (err error) {
				if c.SubNorms {
					l.attnSubNorm, err = norm(p+"attn_sub_norm.weight", qDim)
				}
				return
			},
			func() (err error) { l.ffnNorm, err = norm(p+"ffn_norm.weight", c.Dim); return },
			func() (err error) {
				if c.SubNorms {
					l.ffnSubNorm, err = norm(p+"ffn_sub_norm.weight", c.FFNDim)
				}
				return
			},
			func() (err error) {
				if !g.f16 && !g.lora.has(i, 0, 1, 2) { // adapted q, k, v stay apart: their LoRA terms go before RoPE
					l.qkv, err = stacked(p+"attn_qkv", []string{p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"}, []int{qDim, kvDim, kvDim}, c.Dim, false)
					return
				}
				if l.q, err = ternary(p+"attn_q.weight", c.Dim, qDim); err == nil {
					if l.k, err = ternary(p+"attn_k.weight", c.Dim, kvDim); err == nil {
						l.v, err = ternary(p+"attn_v.weight", c.Dim, kvDim)
					}
				}
				return
			},
			func() (err error) { l.o, err = ternary(p+"attn_output.weight", qDim, c.Dim); return },
			func() (err error) {
				if !g.f16 && !g.lora.has(i, 4, 5) { // adapted gate and up stay apart: their LoRA terms go before the GLU
					l.gateUp, err = stacked(p+"ffn_gate_up", []string{p + "ffn_gate.weight", p + "ffn_up.weight"}, []int{c.FFNDim, c.FFNDim}, c.Dim, true)
					return
				}
				if l.gate, err = ternary(p+"ffn_gate.weight", c.Dim, c.FFNDim); err == nil {
					l.up, err = ternary(p+"ffn_up.weight", c.Dim, c.FFNDim)
				}
				return
			},
			func() (err error) { l.down, err = ternary(p+"ffn_down.weight", c.FFNDim, c.Dim); return },
			func() (err error) { l.kCache, err = g.dev.NewBuffer(uint64(g.ctx * kvDim * 2)); return },
			func() (err error) { l.vCache, err = g.dev.NewBuffer(uint64(g.ctx * kvDim * 2)); return },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
	}
	g.rope, err = gpu.NewBufferFrom(g.dev, RoPETable(g.ctx, c.RoPEDim, c.RoPEBase))
	return err
}

// uploadF16 copies an F16 matrix of rows x cols to the device in row chunks no larger than the
// device's maxStorageBufferRange (the 2B4T embedding alone is 656 MB; uploadRows). On an error,
// or a fault reading the memory-mapped tensor (a panic model.CatchFault turns into an error), it
// releases the chunks it allocated.
func (g *GPU) uploadF16(t *model.Tensor, rows, cols int) (*F16Matrix, error) {
	chunks, err := g.uploadRows(t, rows, uint64(2*cols))
	if err != nil {
		return nil, err
	}
	return &F16Matrix{Name: t.Name, Rows: uint32(rows), Cols: uint32(cols), Chunks: chunks}, nil
}

func (g *GPU) allocScratch() error {
	c := &g.cfg
	B := uint64(MaxBatch)
	qDim, kvDim := uint64(c.Heads*c.HeadDim), uint64(c.KVHeads*c.HeadDim)
	widest := uint64(max(c.Dim, c.Heads*c.HeadDim, c.FFNDim))
	var err error
	alloc := func(dst **gpu.Buffer, bytes uint64) {
		if err == nil {
			*dst, err = g.dev.NewBuffer(bytes)
		}
	}
	// Only what the recorded steps use (scratchBytes counts the same): see the buffers' fields.
	alloc(&g.x, 4*B*uint64(c.Dim))
	if g.outQ8 == nil { // the f16 head's normed f32 input
		alloc(&g.xn, 4*B*uint64(c.Dim))
	}
	alloc(&g.q, 4*B*qDim)
	if g.f16 || !RoPEFusable(c.HeadDim, c.RoPEDim) || g.lora != nil { // k and v unless the q/k/v GEMV stores them
		alloc(&g.k, 4*B*kvDim)
		alloc(&g.v, 4*B*kvDim)
	}
	alloc(&g.att, 4*B*qDim)
	alloc(&g.gate, 4*B*uint64(c.FFNDim))
	if g.f16 || g.lora != nil { // F16 projections or LoRA adapters: separate up, f32 inputs
		alloc(&g.up, 4*B*uint64(c.FFNDim))
		alloc(&g.normed, 4*B*widest)
	}
	if !g.f16 || g.outQ8 != nil { // int8 activations of the ternary projections and the q8_0 head
		alloc(&g.qa, B*widest)
		alloc(&g.sq, 8*B)
	}
	alloc(&g.attnScratch, max(4, AttentionScratchBytes(uint32(c.Heads), uint32(c.HeadDim), uint32(g.ctx))))
	if err != nil {
		return err
	}
	if g.tokens, err = g.dev.NewHostBuffer(4 * B); err != nil {
		return err
	}
	g.logits, err = g.dev.NewHostBuffer(4 * B * uint64(c.VocabSize))
	return err
}

// record builds the command sequence of a forward pass over T tokens whose embeddings are in x,
// at positions step[0] .. step[0]+T-1, leaving the logits of every token in g.logits.
// With a timer it marks a timestamp after every step, labelled with the step's kernel.
func (g *GPU) record(T int, timer *gpu.Timer) (*gpu.Sequence, error) {
	s, err := g.dev.NewSequence()
	if err != nil {
		return nil, err
	}
	if err := g.recordForward(s, uint32(T), timer, g.logits); err != nil {
		s.Release()
		return nil, err
	}
	return s, nil
}

// step is one labelled op of the forward pass.
type step struct {
	label string
	rec   func() error
}

// profileMarks is how many timestamps a profiled one-token step takes at most: the embedding
// gather, 24 ops a layer (a layer with every projection LoRA-adapted: 14 ops of F16
// projections plus the adapters' f32 norms, terms and residual adds; a ternary model's fused
// steps make it 7), the final norm and the logits, and the start mark.
func profileMarks(layers int) int { return 24*layers + 4 }

func (g *GPU) recordForward(s *gpu.Sequence, T uint32, timer *gpu.Timer, logits *gpu.Buffer) error {
	return g.recordForwardOn(s, T, timer, logits, nil)
}

// pagedStep is what a batched step over a paged KV cache (PagedKV) records instead of the
// backend's own caches: the pools of every layer, the step's positions and block tables, and the
// split attention's scratch.
type pagedStep struct {
	refs    *PagedRefs
	k, v    []*gpu.Buffer
	scratch gpu.Range
}

// recordForwardOn records the forward pass over the backend's own KV cache (pg nil: T tokens at
// positions step[0]..step[0]+T-1) or over a paged one (pg: token t at its own position and blocks).
func (g *GPU) recordForwardOn(s *gpu.Sequence, T uint32, timer *gpu.Timer, logits *gpu.Buffer, pg *pagedStep) error {
	c := &g.cfg
	var refs *PagedRefs
	attnScratch := g.attnScratch.Whole()
	if pg != nil {
		refs, attnScratch = pg.refs, pg.scratch
	}
	// caches are layer li's K and V caches: the backend's own, or the paged pools.
	caches := func(li int) (gpu.Range, gpu.Range) {
		if pg != nil {
			return pg.k[li].Whole(), pg.v[li].Whole()
		}
		return g.layers[li].kCache.Whole(), g.layers[li].vCache.Whole()
	}
	ks := g.ks
	dim, qDim, ffn := uint32(c.Dim), uint32(c.Heads*c.HeadDim), uint32(c.FFNDim)
	// normQuant normalizes d-wide rows of in for the next projections: RMSNorm fused with the
	// int8 quantization for ternary weights, plain RMSNorm for F16 ones. A nil w is a sub-norm
	// the model lacks (llama-arch): the rows are quantized (or, for F16, copied) as they are.
	normQuant := func(in *gpu.Buffer, w *gpu.Buffer, d uint32) error {
		if w == nil {
			if g.f16 {
				return ks.Copy(s, in.Whole(), g.normed.Whole(), T*d)
			}
			return ks.Quantize(s, in.Whole(), g.qa.Whole(), g.sq.Whole(), RMSNormArgs{D: d, T: T, XStride: d, OutStride: d / 4})
		}
		if g.f16 {
			return ks.RMSNorm(s, in.Whole(), w.Whole(), g.normed.Whole(), RMSNormArgs{D: d, T: T, XStride: d, OutStride: d, Eps: c.RMSEps})
		}
		return ks.RMSNormQuant(s, in.Whole(), w.Whole(), g.qa.Whole(), g.sq.Whole(),
			RMSNormArgs{D: d, T: T, XStride: d, OutStride: d / 4, Eps: c.RMSEps})
	}
	// mm records projection p into out (accumulate: the fused residual add); in, when not nil,
	// is the fused input norm of a ternary p (the sub-norm before o and down).
	mm := func(p projection, out *gpu.Buffer, accumulate bool, in *NormInput) error {
		if p.f16 != nil {
			return ks.F16MatMul(s, p.f16, g.normed.Whole(), out.Whole(), F16Args{T: T, YStride: p.f16.Rows, Accumulate: accumulate})
		}
		return ks.TernaryMatMul(s, p.tern, g.qa.Whole(), g.sq.Whole(), out.Whole(), MatMulArgs{T: T, YStride: p.tern.Rows, Accumulate: accumulate, Norm: in})
	}
	matmul := "ternary_matmul"
	norm := "rmsnorm_quant"
	if g.f16 {
		matmul, norm = "f16_matmul", "rmsnorm"
	}
	subNorm := norm
	if !c.SubNorms {
		subNorm = map[bool]string{false: "quantize", true: "copy"}[g.f16]
	}
	run := func(steps []step) error {
		for _, st := range steps {
			if err := st.rec(); err != nil {
				return err
			}
			if timer != nil {
				if err := s.Mark(timer, st.label); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if timer != nil {
		if err := s.Mark(timer, "start"); err != nil {
			return err
		}
	}
	if g.embd != nil { // the step's token ids (embed) to x's rows
		if err := run([]step{{"embed_gather", func() error { return ks.EmbedGather(s, g.embd, g.tokens.Whole(), g.x.Whole(), T) }}}); err != nil {
			return err
		}
	}
	// Decode (one token) of a ternary model on a GPU fuses attn_norm and ffn_norm into the GEMV
	// that consumes them (MatMulArgs.Norm: every workgroup normalizes and quantizes x itself, with
	// rmsnorm_quant's code), one dispatch and one dependent stage fewer each (fusedDecodeNorms);
	// prefill keeps the separate rmsnorm_quant.
	fuseNorm := T == 1 && !g.f16 && c.Dim <= NormFuseMaxCols && g.fuseNorms
	normIn := func(w *gpu.Buffer) *NormInput {
		if !fuseNorm {
			return nil
		}
		return &NormInput{X: g.x.Whole(), W: w.Whole(), Eps: c.RMSEps}
	}
	// subNormIn is the same fusion for a sub-norm (attn_sub_norm before o, ffn_sub_norm before
	// down) of the d-wide rows of in into the ternary projection p that reads them: nil (a
	// separate rmsnorm_quant) when decode does not fuse, the model has no sub-norms (llama-arch
	// quantizes without a norm), p is F16, or d is wider than the fused prologue takes.
	subNormIn := func(in, w *gpu.Buffer, p projection, d uint32) *NormInput {
		if !fuseNorm || w == nil || p.tern == nil || d > NormFuseMaxCols {
			return nil
		}
		return &NormInput{X: in.Whole(), W: w.Whole(), Eps: c.RMSEps}
	}
	fusedLabel := func(in *NormInput, label string) string {
		if in != nil {
			return norm + "+" + label
		}
		return label
	}
	kvDim := uint32(c.KVHeads * c.HeadDim)
	// loraIn gives the float input of adapted projections reading d-wide rows of in after the
	// norm w (nil: none), and the step that computes it: the F16 path's normQuant has already
	// written it to normed; a ternary model needs the RMSNorm on its own (rmsnorm: the bits of
	// cpuref.RMSNorm, which the int8 quantization reads too).
	loraIn := func(in, w *gpu.Buffer, d uint32) (gpu.Range, []step) {
		switch {
		case g.f16:
			return g.normed.Whole(), nil
		case w == nil:
			return in.Whole(), nil
		}
		return g.normed.Whole(), []step{{"rmsnorm lora", func() error {
			return ks.RMSNorm(s, in.Whole(), w.Whole(), g.normed.Whole(), RMSNormArgs{D: d, T: T, XStride: d, OutStride: d, Eps: c.RMSEps})
		}}}
	}
	// adapted is the step that adds layer li's LoRA terms of projs to their outputs: x their float
	// input, outs[i] (width widths[i] a token) that of projs[i].
	adapted := func(li int, x gpu.Range, projs []int, outs []*gpu.Buffer, widths []uint32) step {
		return step{"lora", func() error {
			for i, p := range projs {
				if err := g.lora.record(ks, s, T, li, p, x, outs[i], 0, widths[i]); err != nil {
					return err
				}
			}
			return nil
		}}
	}
	// residualLoRA is an adapted o or down projection: p's output and its LoRA terms (layer li,
	// projection proj) in lora.proj, then the residual add x += proj — the order cpuref's
	// BitLinear + Add has.
	residualLoRA := func(li, proj int, p projection, in, w *gpu.Buffer, d uint32) []step {
		xf, pre := loraIn(in, w, d)
		return append(pre,
			step{matmul + " " + model.LoRAProjections[proj].GGUF, func() error { return mm(p, g.lora.proj, false, nil) }},
			adapted(li, xf, []int{proj}, []*gpu.Buffer{g.lora.proj}, []uint32{dim}),
			step{"add residual", func() error { return ks.Add(s, g.x.Whole(), g.lora.proj.Whole(), g.x.Whole(), T*dim) }})
	}
	for li, l := range g.layers {
		attnIn, ffnIn := normIn(l.attnNorm), normIn(l.ffnNorm)
		kCache, vCache := caches(li)
		qkv := []step{
			{matmul + " q", func() error { return mm(l.q, g.q, false, nil) }},
			{matmul + " k", func() error { return mm(l.k, g.k, false, nil) }},
			{matmul + " v", func() error { return mm(l.v, g.v, false, nil) }},
		}
		ropeKV := []step{{"rope_kv", func() error {
			return ks.RoPEKV(s, g.q.Whole(), g.k.Whole(), g.v.Whole(), g.rope.Whole(), kCache, vCache,
				RoPEArgs{T: T, H: uint32(c.Heads), KVH: uint32(c.KVHeads), HeadDim: uint32(c.HeadDim), RoPEDim: uint32(c.RoPEDim), Mode: c.RoPEMode, Ctx: uint32(g.ctx), Paged: refs})
		}}}
		if l.qkv.tern != nil && l.qkv.tern.RoPE != nil { // q, k, v, RoPE and the KV store: one dispatch (decode and prefill)
			qkv = []step{{fusedLabel(attnIn, matmul+" qkv+rope_kv"), func() error {
				return ks.TernaryQKVRoPE(s, l.qkv.tern, g.qa.Whole(), g.sq.Whole(), g.q.Whole(), g.rope.Whole(), kCache, vCache,
					MatMulArgs{T: T, YStride: qDim, Norm: attnIn}, uint32(g.ctx), refs)
			}}}
			ropeKV = nil
		} else if l.qkv.tern != nil { // one dispatch over the stacked q, k and v rows
			qkv = []step{{fusedLabel(attnIn, matmul+" qkv"), func() error {
				return ks.TernaryMatMulStacked(s, l.qkv.tern, g.qa.Whole(), g.sq.Whole(), MatMulArgs{T: T, Norm: attnIn},
					[]SegmentOut{{Y: g.q.Whole(), YStride: qDim}, {Y: g.k.Whole(), YStride: kvDim}, {Y: g.v.Whole(), YStride: kvDim}})
			}}}
		}
		if g.lora.has(li, 0, 1, 2) { // uploaded apart (upload): the terms go in before RoPE
			xf, pre := loraIn(g.x, l.attnNorm, dim)
			qkv = append(append(qkv, pre...), adapted(li, xf, []int{0, 1, 2}, []*gpu.Buffer{g.q, g.k, g.v}, []uint32{qDim, kvDim, kvDim}))
		}
		qkv = append(qkv, ropeKV...)
		ffnSteps := []step{
			{matmul + " gate", func() error { return mm(l.gate, g.gate, false, nil) }},
			{matmul + " up", func() error { return mm(l.up, g.up, false, nil) }},
			{"glu", func() error { return ks.GLU(s, g.gate.Whole(), g.up.Whole(), T*ffn, c.Act) }},
		}
		if g.lora.has(li, 4, 5) { // uploaded apart: the terms go in before the GLU
			xf, pre := loraIn(g.x, l.ffnNorm, dim)
			ffnSteps = slices.Insert(ffnSteps, 2, append(pre, adapted(li, xf, []int{4, 5}, []*gpu.Buffer{g.gate, g.up}, []uint32{ffn, ffn}))...)
		}
		if l.gateUp.tern != nil { // gate, up and the GLU in one dispatch
			ffnSteps = []step{{fusedLabel(ffnIn, matmul+" gate_up+glu"), func() error {
				return ks.TernaryGLU(s, l.gateUp.tern, g.qa.Whole(), g.sq.Whole(), g.gate.Whole(), MatMulArgs{T: T, YStride: ffn, Norm: ffnIn}, c.Act)
			}}}
		}
		if ffnIn == nil || l.gateUp.tern == nil {
			ffnSteps = append([]step{{norm, func() error { return normQuant(g.x, l.ffnNorm, dim) }}}, ffnSteps...)
		}
		var steps []step
		if attnIn == nil || l.qkv.tern == nil {
			steps = append(steps, step{norm, func() error { return normQuant(g.x, l.attnNorm, dim) }})
		}
		steps = append(steps, qkv...)
		steps = append(steps, []step{
			{"attention", func() error {
				return g.attn.Attention(s, g.q.Whole(), kCache, vCache, g.att.Whole(), attnScratch,
					AttentionArgs{T: T, H: uint32(c.Heads), KVH: uint32(c.KVHeads), HeadDim: uint32(c.HeadDim), Ctx: uint32(g.ctx), Paged: refs})
			}},
		}...)
		// The sub-norms: fused into the o and down GEMVs' prologues where decode fuses norms
		// (subNormIn), else a dispatch of their own; an adapted projection keeps the separate
		// norm (its LoRA terms read the float RMSNorm output).
		if oIn := subNormIn(g.att, l.attnSubNorm, l.o, qDim); oIn != nil && !g.lora.has(li, 3) {
			steps = append(steps, step{fusedLabel(oIn, matmul+" o +residual"), func() error { return mm(l.o, g.x, true, oIn) }})
		} else {
			steps = append(steps, step{subNorm, func() error { return normQuant(g.att, l.attnSubNorm, qDim) }})
			if g.lora.has(li, 3) {
				steps = append(steps, residualLoRA(li, 3, l.o, g.att, l.attnSubNorm, qDim)...)
			} else {
				steps = append(steps, step{matmul + " o +residual", func() error { return mm(l.o, g.x, true, nil) }})
			}
		}
		steps = append(steps, ffnSteps...)
		if downIn := subNormIn(g.gate, l.ffnSubNorm, l.down, ffn); downIn != nil && !g.lora.has(li, 6) {
			steps = append(steps, step{fusedLabel(downIn, matmul+" down +residual"), func() error { return mm(l.down, g.x, true, downIn) }})
		} else {
			steps = append(steps, step{subNorm, func() error { return normQuant(g.gate, l.ffnSubNorm, ffn) }})
			if g.lora.has(li, 6) {
				steps = append(steps, residualLoRA(li, 6, l.down, g.gate, l.ffnSubNorm, ffn)...)
			} else {
				steps = append(steps, step{matmul + " down +residual", func() error { return mm(l.down, g.x, true, nil) }})
			}
		}
		if err := run(steps); err != nil {
			return err
		}
	}
	// The LM head. The greedy step (DecodeGreedy, g.greedyRec) writes no logits: the head's
	// workgroups leave argmax candidates in greedyLogits and argmax_reduce picks the token
	// (Q8MatMulArgmax, F16MatMulArgmax, ArgmaxReduce).
	greedy := g.greedyRec && T == 1
	reduce := step{"argmax", func() error { // argmax_reduce: the candidates to the token id
		n := g.out.ArgmaxCandidates
		if g.outQ8 != nil {
			n = g.outQ8.ArgmaxCandidates
		}
		return ks.ArgmaxReduce(s, g.greedyLogits.Whole(), g.tokenOut.Whole(), n(), 0, 0)
	}}
	if g.outQ8 != nil { // the q8_0 head: output_norm quantized like a BitLinear input, int8 GEMV
		// A one-token step fuses the output norm into the GEMV where the layer norms are fused
		// (g.fuseNorms: fusedDecodeNorms): every workgroup normalizes and quantizes x itself with
		// rmsnorm_quant's code (Q8Args.Norm); prefill keeps the separate rmsnorm_quant.
		var outIn *NormInput
		label := "q8_matmul"
		var steps []step
		if fuseNorm { // (an F16 model keeps its separate output norm too)
			outIn = &NormInput{X: g.x.Whole(), W: g.outNorm.Whole(), Eps: c.RMSEps}
			label = "rmsnorm_quant+q8_matmul"
		} else {
			steps = append(steps, step{"rmsnorm_quant output", func() error {
				return ks.RMSNormQuant(s, g.x.Whole(), g.outNorm.Whole(), g.qa.Whole(), g.sq.Whole(),
					RMSNormArgs{D: dim, T: T, XStride: dim, OutStride: dim / 4, Eps: c.RMSEps})
			}})
		}
		if greedy {
			return run(append(steps, step{label + " +argmax", func() error {
				return ks.Q8MatMulArgmax(s, g.outQ8, g.qa.Whole(), g.sq.Whole(), g.greedyLogits.Whole(), Q8Args{T: 1, Norm: outIn})
			}}, reduce))
		}
		return run(append(steps, step{label + " logits", func() error {
			return ks.Q8MatMul(s, g.outQ8, g.qa.Whole(), g.sq.Whole(), logits.Whole(), Q8Args{T: T, YStride: uint32(c.VocabSize), Norm: outIn})
		}}))
	}
	steps := []step{{"rmsnorm output", func() error {
		return ks.RMSNorm(s, g.x.Whole(), g.outNorm.Whole(), g.xn.Whole(), RMSNormArgs{D: dim, T: T, XStride: dim, OutStride: dim, Eps: c.RMSEps})
	}}}
	if greedy {
		return run(append(steps, step{"f16_matmul +argmax", func() error {
			return ks.F16MatMulArgmax(s, g.out, g.xn.Whole(), g.greedyLogits.Whole(), F16Args{T: 1})
		}}, reduce))
	}
	return run(append(steps, step{"f16_matmul logits", func() error {
		return ks.F16MatMul(s, g.out, g.xn.Whole(), logits.Whole(), F16Args{T: T, YStride: uint32(c.VocabSize)})
	}}))
}

// KernelTime is the GPU time one kind of step took, summed over a model's layers, averaged over
// the profiled decode steps; Calls is how many such steps one decode step records.
type KernelTime struct {
	Label string
	NS    float64
	Calls int
}

// EnableProfile switches decoding to a recorded step with a timestamp after every op; Profile
// then reports where the GPU time of the decode steps went. It costs a little GPU time per step.
func (g *GPU) EnableProfile() error {
	if g.noCache {
		return errNoOwnCache
	}
	if g.profSeq != nil {
		return nil
	}
	t, err := g.dev.NewTimer(profileMarks(len(g.layers)))
	if err != nil {
		return err
	}
	seq, err := g.record(1, t)
	if err != nil {
		t.Release()
		return err
	}
	g.profTimer, g.profSeq = t, seq
	g.profTotals = map[string]*KernelTime{}
	return nil
}

// Profile returns the per-kernel GPU time per decode step, largest first (empty before any
// profiled step).
func (g *GPU) Profile() []KernelTime {
	var out []KernelTime
	for _, kt := range g.profTotals {
		k := *kt
		k.NS /= float64(g.profSteps)
		k.Calls /= g.profSteps
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NS > out[j].NS })
	return out
}

func (g *GPU) collectProfile(t *gpu.Timer) error {
	spans, err := t.Spans()
	if err != nil {
		return err
	}
	for _, sp := range spans {
		kt := g.profTotals[sp.Label]
		if kt == nil {
			kt = &KernelTime{Label: sp.Label}
			g.profTotals[sp.Label] = kt
		}
		kt.NS += sp.NS
		kt.Calls++
	}
	g.profSteps++
	return nil
}

// Config returns the model hyper-parameters.
func (g *GPU) Config() model.Config { return g.cfg }

// Pos is the number of tokens in the KV cache.
func (g *GPU) Pos() int { return g.pos }

// Reset empties the KV cache.
func (g *GPU) Reset() { g.pos = 0 }

var errClosed = errors.New("backend is closed")

// errNoOwnCache is the error of a forward pass over the backend's own KV cache after
// DropOwnCache.
var errNoOwnCache = errors.New("the backend's own KV cache was released for a paged KV cache (DropOwnCache): use its PagedKV sequences")

// DropOwnCache frees the backend's own KV cache (2 · layers · ctx · kv heads · head dim · 2
// bytes: 300 MiB for 2B4T at 4096 positions) and the steps recorded over it, for a backend whose
// sequences all live in a PagedKV (bitgpu.Model.NewPagedSequences, `bitgpu serve` on the GPU):
// that memory then serves the pool. PagedKV sequences are unaffected; Prefill, Decode,
// DecodeGreedy and DecodeCandidates of the backend itself fail after it, and Plan().KVCache is
// 0. A backend with LoRA adapters keeps its cache (PagedKV refuses adapters anyway).
func (g *GPU) DropOwnCache() {
	if g.closed || g.noCache || g.lora != nil {
		return
	}
	g.noCache = true
	for _, s := range []*gpu.Sequence{g.decode, g.profSeq, g.greedySeq} {
		if s != nil {
			s.Release()
		}
	}
	g.decode, g.profSeq, g.greedySeq = nil, nil, nil
	for _, t := range []*gpu.Timer{g.profTimer, g.greedyTimer} {
		if t != nil {
			t.Release()
		}
	}
	g.profTimer, g.greedyTimer = nil, nil
	if g.cand != nil {
		g.cand.release()
		g.cand = nil
	}
	for i := range g.layers {
		l := &g.layers[i]
		for _, b := range []*gpu.Buffer{l.kCache, l.vCache} {
			if b != nil {
				b.Release()
			}
		}
		l.kCache, l.vCache = nil, nil
	}
	g.plan.KVCache = 0
}

// embed sets up the inputs of a step over tokens: with the table on the device (g.embd) it
// writes the token ids (4 bytes each) for the step's embed_gather; otherwise (block-quantized
// tables) it gathers the f32 rows on the host (model.FloatRow, exactly the CPU reference's
// values; a fault reading the mapped file is an error) and writes them into x (4·dim bytes each).
func (g *GPU) embed(tokens []int) error {
	if g.embd != nil {
		ids := g.tokenIDs[:0]
		for _, tok := range tokens {
			if tok < 0 || tok >= g.cfg.VocabSize {
				return fmt.Errorf("token %d outside the vocabulary [0, %d)", tok, g.cfg.VocabSize)
			}
			ids = append(ids, uint32(tok))
		}
		g.tokenIDs = ids
		return gpu.Write(g.tokens, 0, ids)
	}
	dim := g.cfg.Dim
	if cap(g.embedRows) < len(tokens)*dim {
		g.embedRows = make([]float32, MaxBatch*dim)
	}
	rows := g.embedRows[:len(tokens)*dim]
	for t, tok := range tokens {
		if tok < 0 || tok >= g.cfg.VocabSize {
			return fmt.Errorf("token %d outside the vocabulary [0, %d)", tok, g.cfg.VocabSize)
		}
		if err := model.CatchFault(func() error { return model.FloatRow(g.embdHost, tok, rows[t*dim:(t+1)*dim]) }); err != nil {
			return err
		}
	}
	return gpu.Write(g.x, 0, rows)
}

// checkTokens rejects a token outside the vocabulary before anything changes, with the CPU
// reference's message (less its "cpuref: " prefix).
func (g *GPU) checkTokens(tokens []int) error {
	for i, t := range tokens {
		if t < 0 || t >= g.cfg.VocabSize {
			return fmt.Errorf("token %d (index %d) outside the vocabulary [0, %d)", t, i, g.cfg.VocabSize)
		}
	}
	return nil
}

func (g *GPU) checkRoom(n int) error {
	if g.closed {
		return errClosed
	}
	if g.noCache {
		return errNoOwnCache
	}
	if n == 0 {
		return fmt.Errorf("no tokens")
	}
	if g.pos+n > g.ctx {
		return fmt.Errorf("context full: %d tokens in the cache + %d new exceed --ctx %d", g.pos, n, g.ctx)
	}
	return nil
}

// Prefill appends tokens to the KV cache in chunks of MaxBatch and returns the logits of every
// token (allLogits) or of the last one.
func (g *GPU) Prefill(tokens []int, allLogits bool) ([]float32, error) {
	if err := g.checkRoom(len(tokens)); err != nil {
		return nil, err
	}
	if err := g.checkTokens(tokens); err != nil {
		return nil, err
	}
	vocab := g.cfg.VocabSize
	var out []float32
	for start := 0; start < len(tokens); start += MaxBatch {
		chunk := tokens[start:min(len(tokens), start+MaxBatch)]
		seq := g.decode
		if g.profSeq != nil {
			seq = g.profSeq
		}
		reused := len(chunk) == 1
		if !reused {
			var err error
			if seq, err = g.record(len(chunk), nil); err != nil {
				return nil, err
			}
		}
		err := g.run(seq, chunk)
		if !reused {
			seq.Release()
		}
		if err != nil {
			return nil, err
		}
		if reused && g.profSeq != nil {
			if err := g.collectProfile(g.profTimer); err != nil {
				return nil, err
			}
		}
		last := start+len(chunk) == len(tokens)
		if allLogits || last {
			from := 0
			if !allLogits {
				from = len(chunk) - 1
			}
			l, err := gpu.Read[float32](g.logits, uint64(from*vocab), (len(chunk)-from)*vocab)
			if err != nil {
				return nil, err
			}
			out = append(out, l...)
		}
	}
	return out, nil
}

func (g *GPU) run(seq *gpu.Sequence, tokens []int) error {
	if err := g.embed(tokens); err != nil {
		return err
	}
	if err := seq.SetStep(0, uint32(g.pos)); err != nil {
		return err
	}
	if err := seq.Submit(); err != nil {
		return err
	}
	g.pos += len(tokens)
	return nil
}

// Decode appends one token and returns its logits, replaying the recorded decode step.
func (g *GPU) Decode(token int) ([]float32, error) {
	return g.Prefill([]int{token}, false)
}

// DecodeGreedy appends token to the KV cache and returns the id of the most likely next token
// (cpuref.Argmax of the logits Decode would return: the lowest id on ties, NaNs skipped; an error
// when every logit is NaN), choosing it on the device: no logits are written, the LM head's
// workgroups each leave the best of their rows and one small dispatch reduces those to the id,
// and only 4 bytes come back per token. The step is recorded on first use and replayed after
// (GreedyStructure counts it).
func (g *GPU) DecodeGreedy(token int) (int, error) {
	if err := g.checkRoom(1); err != nil {
		return 0, err
	}
	if err := g.checkTokens([]int{token}); err != nil {
		return 0, err
	}
	if g.greedySeq == nil {
		if err := g.recordGreedy(); err != nil {
			return 0, err
		}
	}
	if err := g.run(g.greedySeq, []int{token}); err != nil {
		return 0, err
	}
	if g.greedyTimer != nil {
		if err := g.collectProfile(g.greedyTimer); err != nil {
			return 0, err
		}
	}
	g.greedySteps++
	id, err := gpu.Read[uint32](g.tokenOut, 0, 1)
	if err != nil {
		return 0, err
	}
	if id[0] >= uint32(g.cfg.VocabSize) {
		return 0, fmt.Errorf("decode at position %d: the logits have no maximum (all NaN)", g.pos-1)
	}
	return int(id[0]), nil
}

// GreedySteps is how many tokens DecodeGreedy has run through the on-device argmax (the step
// that reads back only the chosen id), so a caller can tell that path ran.
func (g *GPU) GreedySteps() int { return g.greedySteps }

// Close releases the device memory of the model (not the device).
func (g *GPU) Close() error {
	if g.closed {
		return nil
	}
	g.closed = true
	if g.decode != nil {
		g.decode.Release()
	}
	if g.greedyTimer != nil {
		g.greedyTimer.Release()
	}
	if g.profSeq != nil {
		g.profSeq.Release()
		g.profTimer.Release()
	}
	if g.greedySeq != nil {
		g.greedySeq.Release()
	}
	if g.cand != nil {
		g.cand.release()
	}
	g.lora.release()
	if g.embd != nil && !g.embdShared {
		for _, c := range g.embd.Chunks {
			c.Buf.Buf.Release()
		}
	}
	bufs := []*gpu.Buffer{g.tokens, g.greedyLogits, g.tokenOut, g.outNorm, g.rope, g.x, g.xn, g.q, g.k, g.v, g.att, g.gate, g.up, g.qa, g.normed, g.sq, g.logits, g.attnScratch}
	for _, l := range g.layers {
		bufs = append(bufs, l.attnNorm, l.attnSubNorm, l.ffnNorm, l.ffnSubNorm, l.kCache, l.vCache)
		for _, p := range []projection{l.q, l.k, l.v, l.o, l.gate, l.up, l.down, l.qkv, l.gateUp} {
			bufs = append(bufs, p.buffers()...)
		}
	}
	if g.out != nil {
		for _, c := range g.out.Chunks {
			bufs = append(bufs, c.Buf.Buf)
		}
	}
	if g.outQ8 != nil {
		bufs = append(bufs, g.outQ8.buffers()...)
	}
	for _, b := range bufs {
		if b != nil {
			b.Release()
		}
	}
	if g.ks != nil {
		g.ks.Release()
	}
	if g.attn != nil {
		g.attn.Release()
	}
	if g.ownsDev {
		return g.dev.Close()
	}
	return nil
}

// OpenGPU opens the Vulkan device chosen by the environment (BITGPU_DEVICE, BITGPU_VALIDATE; see
// gpu.OptionsFromEnv) and loads m on it; Close also closes the device. Without a Vulkan device
// the error wraps gpu.ErrNoDevice.
func OpenGPU(m *model.Model, opts GPUOptions) (*GPU, error) {
	dev, err := gpu.Open(gpu.OptionsFromEnv())
	if err != nil {
		return nil, err
	}
	if opts.OnDevice != nil {
		opts.OnDevice(dev)
	}
	g, err := NewGPU(dev, m, opts)
	if err != nil {
		dev.Close()
		return nil, err
	}
	g.ownsDev = true
	return g, nil
}
