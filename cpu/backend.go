package cpu

import (
	"encoding/binary"
	"fmt"
	"math"
	goruntime "runtime"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// Backend runs the BitNet b1.58 forward pass of one model on the CPU, giving cpuref.Backend's
// logits bit for bit, faster. It satisfies bitgpu's runtime.Backend interface (Config, Prefill,
// Decode, Pos, Reset, Close). The ternary projections are repacked at load (2 bits a weight, as
// on disk); the embedding and the output matrix are read in place. It is not safe for concurrent
// use. Close stops its worker goroutines.
type Backend struct {
	cfg    model.Config
	ctx    int
	embd   *model.Tensor
	out    *model.Tensor // the logits matrix (cpuref.OutputMatrix of the output or tied embedding)
	norm   []float32
	layers []layer
	kCache [][]uint16 // per layer, f16 bits [ctx][KVHeads*HeadDim]
	vCache [][]uint16
	pos    int
	closed bool
	forked bool // made by NewSequence: the worker pool is the parent's, not closed here
	eng    engine
	sc     scratch
	// lora holds the user scale of each adapter (WithLoRA); loraRank the largest term rank.
	lora     cpuref.LoRAScales
	loraRank int
}

// layer is one transformer block: norms as cpuref has them (nil sub-norms when the model has
// none) and four packed products: q|k|v fused, o, gate|up fused, down.
type layer struct {
	attnNorm, attnSubNorm, ffnNorm, ffnSubNorm []float32
	qkv, o, gateUp, down                       *packed
	// lora are the LoRA terms of q, k, v, o, gate, up and down (model.LoRAProjections order).
	lora [7][]loraTerm
}

// loraTerm is a cpuref.LoRATerm with its factors converted to float32 once (F16 to F32 is
// exact): a is [r][in] and b [out][r], row-major.
type loraTerm struct {
	cpuref.LoRATerm
	a, b []float32
}

// newLoRATerms converts terms' factors to float32.
func newLoRATerms(terms []cpuref.LoRATerm) ([]loraTerm, error) {
	var out []loraTerm
	for _, t := range terms {
		lt := loraTerm{LoRATerm: t, a: make([]float32, t.Pair.A.Shape[0]*t.Pair.A.Shape[1]), b: make([]float32, t.Pair.B.Shape[0]*t.Pair.B.Shape[1])}
		if err := model.DecodeF16Row(t.Pair.A.Data, lt.a); err != nil {
			return nil, err
		}
		if err := model.DecodeF16Row(t.Pair.B.Data, lt.b); err != nil {
			return nil, err
		}
		out = append(out, lt)
	}
	return out, nil
}

// scratch holds the forward's buffers, reused from call to call (grown as needed).
type scratch struct {
	x, normed, qkv, att, proj, gu, h []float32
	qa                               []int8
	sa                               []float32
	cos, sin                         []float32
	in                               acts
	loraU                            []float32 // applyLoRA's scratch: A·x of one token
	at                               []place   // Prefill's tokens' places
}

// place is where one token of a forward pass belongs: the sequence whose KV cache it is stored
// in and attends over, and whose LoRA scales apply to it, and its position in that sequence.
type place struct {
	seq *Backend
	pos int
}

// options are New's settings.
type options struct {
	threads int
	kernel  Kernel
	head    cpuref.LMHead
	lora    []cpuref.Adapter
}

// Option configures New (WithThreads, WithKernel, WithLMHead).
type Option func(*options)

// WithThreads sets the number of threads (the caller's plus n-1 workers); n <= 0, the default,
// means runtime.GOMAXPROCS(0) at New.
func WithThreads(n int) Option { return func(o *options) { o.threads = n } }

// WithKernel picks the ternary kernel (KernelAuto, the default, KernelVNNI, KernelAVX2,
// KernelDotProd, KernelNEON or KernelLUT); New fails for a SIMD kernel on a CPU (or build)
// without its instructions.
func WithKernel(k Kernel) Option { return func(o *options) { o.kernel = k } }

// WithLMHead computes the logits with head h, as cpuref.WithLMHead does (cpuref.LMHeadF16 or
// cpuref.LMHeadQ8_0; "" is cpuref.DefaultLMHead).
func WithLMHead(h cpuref.LMHead) Option { return func(o *options) { o.head = h } }

// WithLoRA applies the adapters, in order, as cpuref.WithLoRA does (the same terms and
// arithmetic, cpuref.ApplyLoRA), each at its Scale until SetLoRAScales changes them.
func WithLoRA(adapters ...cpuref.Adapter) Option {
	return func(o *options) { o.lora = append(o.lora, adapters...) }
}

// New checks m exactly as cpuref.New does (the same hyper-parameters, tensor names, shapes and
// types; the same KV cache memory plan, cpuref.CheckKVCache) and returns a Backend with a KV
// cache of ctx tokens (ctx <= 0 means m.Config.ContextLength). Loading repacks every ternary
// projection (I2_S, TQ1_0, TQ2_0) into the layout of dot.go, split across the worker threads.
// Errors name the tensor, the option, or the sizes that do not fit.
func New(m *model.Model, ctx int, opts ...Option) (*Backend, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if m == nil {
		return nil, fmt.Errorf("cpu: nil model")
	}
	kernel, err := o.kernel.resolve()
	if err != nil {
		return nil, err
	}
	cfg := m.Config
	if ctx <= 0 {
		ctx = cfg.ContextLength
	}
	if err := cpuref.CheckConfig(&cfg, ctx); err != nil {
		return nil, err
	}
	if err := cpuref.CheckKVCache(cfg, ctx); err != nil {
		return nil, err
	}
	threads := o.threads
	if threads <= 0 {
		threads = goruntime.GOMAXPROCS(0)
	}
	b := &Backend{cfg: cfg, ctx: ctx, eng: engine{pool: newPool(threads), kernel: kernel}}
	if err := b.load(m, o.head, o.lora); err != nil {
		b.eng.pool.close()
		return nil, err
	}
	b.kCache, b.vCache = cpuref.NewKVCache(cfg, ctx)
	return b, nil
}

// load reads the tensors cpuref.New reads, with its checks (cpuref.LoadWeights), and packs the
// projections: q/k/v together, gate/up together.
func (b *Backend) load(m *model.Model, head cpuref.LMHead, adapters []cpuref.Adapter) error {
	w, err := cpuref.LoadWeights(m, b.cfg, head)
	if err != nil {
		return prefixed(err)
	}
	if err := cpuref.AttachLoRA(w, b.cfg, adapters); err != nil {
		return prefixed(err)
	}
	b.lora, b.loraRank = cpuref.AdapterScales(adapters), cpuref.MaxLoRARank(w)
	b.embd, b.out, b.norm = w.Embd, w.Out, w.Norm
	b.layers = make([]layer, len(w.Layers))
	src := func(p cpuref.Projection) source { return source{w: p.W, f: p.F, scale: p.Scale, extra: p.Extra} }
	for i, lw := range w.Layers {
		l := &b.layers[i]
		l.attnNorm, l.attnSubNorm, l.ffnNorm, l.ffnSubNorm = lw.AttnNorm, lw.AttnSubNorm, lw.FFNNorm, lw.FFNSubNorm
		for j, terms := range [7][]cpuref.LoRATerm{lw.Q.LoRA, lw.K.LoRA, lw.V.LoRA, lw.O.LoRA, lw.Gate.LoRA, lw.Up.LoRA, lw.Down.LoRA} {
			if l.lora[j], err = newLoRATerms(terms); err != nil {
				return prefixed(err)
			}
		}
		if l.qkv, err = pack(b.eng.pool, src(lw.Q), src(lw.K), src(lw.V)); err != nil {
			return err
		}
		if l.o, err = pack(b.eng.pool, src(lw.O)); err != nil {
			return err
		}
		if l.gateUp, err = pack(b.eng.pool, src(lw.Gate), src(lw.Up)); err != nil {
			return err
		}
		if l.down, err = pack(b.eng.pool, src(lw.Down)); err != nil {
			return err
		}
	}
	return nil
}

// prefixed adds "cpu: " to a non-nil error.
func prefixed(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("cpu: %w", err)
}

// Config returns the model hyper-parameters (with defaults filled: RMSEps, RoPEDim).
func (b *Backend) Config() model.Config { return b.cfg }

// Pos is the number of tokens in the KV cache.
func (b *Backend) Pos() int { return b.pos }

// Reset empties the KV cache (Pos() becomes 0).
func (b *Backend) Reset() { b.pos = 0 }

// Kernel reports the ternary kernel in use (KernelVNNI, KernelAVX2, KernelDotProd, KernelNEON or
// KernelLUT).
func (b *Backend) Kernel() Kernel { return b.eng.kernel }

// Threads reports the number of threads the backend splits work over.
func (b *Backend) Threads() int { return b.eng.pool.threads }

// LMHead reports the LM head in effect: cpuref.LMHeadQ8_0 when the logits matrix is Q8_0, else
// cpuref.LMHeadF16 (as cpuref.Backend.LMHead).
func (b *Backend) LMHead() cpuref.LMHead {
	if b.out != nil && b.out.Type == model.TypeQ8_0 {
		return cpuref.LMHeadQ8_0
	}
	return cpuref.LMHeadF16
}

// Close stops the worker goroutines and releases the KV cache and the packed weights; the
// Backend must not be used after. The model stays open (its owner closes it).
func (b *Backend) Close() error {
	if !b.closed && !b.forked {
		b.eng.pool.close()
	}
	b.kCache, b.vCache, b.layers, b.closed = nil, nil, nil, true
	return nil
}

// Decode appends token at Pos() and returns its VocabSize logits. Errors as Prefill.
func (b *Backend) Decode(token int) ([]float32, error) {
	return b.Prefill([]int{token}, false)
}

// prefillChunk is the most tokens one forward pass takes: longer prompts run in chunks (the same
// bits: every token's arithmetic is independent of how tokens are grouped), which bounds the
// scratch memory.
const prefillChunk = 64

// Prefill appends tokens at positions Pos()..Pos()+len(tokens)-1 and returns logits: with
// allLogits len(tokens)*VocabSize values (row t is token t's), otherwise the last token's
// VocabSize values — the same bits as cpuref.Backend.Prefill. It returns an error, leaving Pos()
// unchanged, for no tokens, a token outside [0, VocabSize), a cache that would exceed the context
// length, or a closed Backend.
func (b *Backend) Prefill(tokens []int, allLogits bool) ([]float32, error) {
	if err := cpuref.CheckStep(b.closed, b.pos, b.ctx, b.cfg.VocabSize, tokens); err != nil {
		return nil, prefixed(err)
	}
	vocab := b.cfg.VocabSize
	rows := 1
	if allLogits {
		rows = len(tokens)
	}
	logits := make([]float32, rows*vocab)
	err := model.CatchFault(func() error {
		for c0 := 0; c0 < len(tokens); c0 += prefillChunk {
			c1 := min(c0+prefillChunk, len(tokens))
			var dst []float32
			switch {
			case allLogits:
				dst = logits[c0*vocab : c1*vocab]
			case c1 == len(tokens):
				dst = logits
			}
			b.sc.at = grow(b.sc.at, c1-c0)
			for t := range b.sc.at {
				b.sc.at[t] = place{seq: b, pos: b.pos + c0 + t}
			}
			if err := b.forward(tokens[c0:c1], b.sc.at, dst, allLogits); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.pos += len(tokens)
	return logits, nil
}

// forward runs cpuref's forward (cpuref.Backend's doc comment) over tokens, token t at place
// at[t] (its sequence and position: RoPE at that position, its K/V stored into and attention over
// that sequence's cache, LoRA at that sequence's scales; a sequence's tokens in ascending
// positions), with b's scratch and pool: every product is one matmul over all the tokens. With
// dst non-nil it writes logits there: every token's rows when all, else the last token's.
func (b *Backend) forward(tokens []int, at []place, dst []float32, all bool) error {
	c := &b.cfg
	n := len(tokens)
	dim, qDim, kvDim, ffn := c.Dim, c.Heads*c.HeadDim, c.KVHeads*c.HeadDim, c.FFNDim
	qkvDim := qDim + 2*kvDim
	sc := &b.sc
	wide := max(dim, qDim, ffn)
	sc.x = grow(sc.x, n*dim)
	sc.normed = grow(sc.normed, n*wide)
	sc.qkv = grow(sc.qkv, n*qkvDim)
	sc.att = grow(sc.att, n*qDim)
	sc.proj = grow(sc.proj, n*dim)
	sc.gu = grow(sc.gu, n*2*ffn)
	sc.h = grow(sc.h, n*ffn)
	sc.qa = grow(sc.qa, n*wide)
	sc.sa = grow(sc.sa, n)
	half := c.RoPEDim / 2
	sc.cos = grow(sc.cos, n*half)
	sc.sin = grow(sc.sin, n*half)
	x := sc.x
	for t, tok := range tokens {
		if err := cpuref.Embedding(x[t*dim:(t+1)*dim], b.embd, tok); err != nil {
			return err
		}
		cpuref.RoPEAngles(sc.cos[t*half:(t+1)*half], sc.sin[t*half:(t+1)*half], at[t].pos, c.RoPEDim, c.RoPEBase)
	}
	glu := cpuref.ReLU2GLU
	if c.Act == model.ActSiLU {
		glu = cpuref.SiLUGLU
	}
	for li := range b.layers {
		l := &b.layers[li]
		// Attention block.
		if err := b.normQuant(x, l.attnNorm, n, dim); err != nil {
			return err
		}
		if err := b.eng.matmul(sc.qkv[:n*qkvDim], l.qkv, &sc.in); err != nil {
			return err
		}
		if err := b.applyLoRA(sc.qkv[:n*qkvDim], at, l.lora[:3], qDim, kvDim, kvDim); err != nil {
			return err
		}
		for t := range n {
			row := sc.qkv[t*qkvDim : (t+1)*qkvDim]
			q, k, v := row[:qDim], row[qDim:qDim+kvDim], row[qDim+kvDim:]
			cs, sn := sc.cos[t*half:(t+1)*half], sc.sin[t*half:(t+1)*half]
			cpuref.RoPERotate(q, cs, sn, c.Heads, c.HeadDim, c.RoPEMode)
			cpuref.RoPERotate(k, cs, sn, c.KVHeads, c.HeadDim, c.RoPEMode)
			if err := cpuref.StoreKV(at[t].seq.kCache[li], at[t].pos, k); err != nil {
				return err
			}
			if err := cpuref.StoreKV(at[t].seq.vCache[li], at[t].pos, v); err != nil {
				return err
			}
		}
		if err := b.attention(li, at); err != nil {
			return err
		}
		if err := b.normQuant(sc.att[:n*qDim], l.attnSubNorm, n, qDim); err != nil {
			return err
		}
		if err := b.eng.matmul(sc.proj[:n*dim], l.o, &sc.in); err != nil {
			return err
		}
		if err := b.applyLoRA(sc.proj[:n*dim], at, l.lora[3:4], dim); err != nil {
			return err
		}
		if err := cpuref.Add(x, x, sc.proj[:n*dim]); err != nil {
			return err
		}
		// Feed-forward block.
		if err := b.normQuant(x, l.ffnNorm, n, dim); err != nil {
			return err
		}
		if err := b.eng.matmul(sc.gu[:n*2*ffn], l.gateUp, &sc.in); err != nil {
			return err
		}
		if err := b.applyLoRA(sc.gu[:n*2*ffn], at, l.lora[4:6], ffn, ffn); err != nil {
			return err
		}
		for t := range n {
			g, u := sc.gu[t*2*ffn:t*2*ffn+ffn], sc.gu[t*2*ffn+ffn:(t+1)*2*ffn]
			if err := glu(sc.h[t*ffn:(t+1)*ffn], g, u); err != nil {
				return err
			}
		}
		if err := b.normQuant(sc.h[:n*ffn], l.ffnSubNorm, n, ffn); err != nil {
			return err
		}
		if err := b.eng.matmul(sc.proj[:n*dim], l.down, &sc.in); err != nil {
			return err
		}
		if err := b.applyLoRA(sc.proj[:n*dim], at, l.lora[6:7], dim); err != nil {
			return err
		}
		if err := cpuref.Add(x, x, sc.proj[:n*dim]); err != nil {
			return err
		}
	}
	if dst == nil {
		return nil
	}
	first := n - 1
	if all {
		first = 0
	}
	return b.logits(dst[:(n-first)*c.VocabSize], x[first*dim:n*dim], n-first)
}

// normQuant applies RMSNorm with weights w (nil: none, the input is quantized as it is) to each
// of n tokens of in ([n][d]) and quantizes the result per token (cpuref.RMSNorm,
// cpuref.QuantizeActivations), leaving the int8 input of the next products in b.sc.in.
func (b *Backend) normQuant(in, w []float32, n, d int) error {
	sc := &b.sc
	for t := range n {
		row := in[t*d : (t+1)*d]
		if w != nil {
			row = sc.normed[t*d : (t+1)*d]
			if err := cpuref.RMSNorm(row, in[t*d:(t+1)*d], w, b.cfg.RMSEps); err != nil {
				return err
			}
		}
		s, err := cpuref.QuantizeActivations(sc.qa[t*d:(t+1)*d], row)
		if err != nil {
			return err
		}
		sc.sa[t] = s
	}
	sc.in.set(sc.qa[:n*d], sc.sa[:n], d)
	sc.in.x = in[:n*d] // the float rows, for float projections
	if w != nil {
		sc.in.x = sc.normed[:n*d]
	}
	return nil
}

// attention runs cpuref.Attention in layer li for the tokens of b.sc.qkv, token t over its
// place's cache up to its position (its K/V already stored), every (token, head) pair an
// independent item split across the pool.
func (b *Backend) attention(li int, at []place) error {
	c := &b.cfg
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	qkvDim := qDim + 2*kvDim
	group := c.Heads / c.KVHeads
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	items := len(at) * c.Heads
	keys := 0 // the most keys a token attends over
	for _, p := range at {
		keys = max(keys, p.pos+1)
	}
	// An item is at most 2·keys·HeadDim scalar products with f16 lookups, each worth about
	// scalarWork products of the ternary kernel.
	grain := max(1, minPartWork/max(1, scalarWork*2*keys*c.HeadDim))
	return b.eng.pool.run(items, grain, func(lo, hi int) error {
		var sBuf [cpuref.AttentionChunk]float32
		var ocBuf [256]float32 // no allocation for head sizes up to 256
		s, oc := sBuf[:], ocBuf[:]
		if c.HeadDim > len(oc) {
			oc = make([]float32, c.HeadDim)
		}
		oc = oc[:c.HeadDim]
		for it := lo; it < hi; it++ {
			t, h := it/c.Heads, it%c.Heads
			q := b.sc.qkv[t*qkvDim+h*c.HeadDim : t*qkvDim+(h+1)*c.HeadDim]
			out := b.sc.att[t*qDim+h*c.HeadDim : t*qDim+(h+1)*c.HeadDim]
			p := at[t]
			attentionHead(out, q, p.seq.kCache[li], p.seq.vCache[li], p.pos, (h/group)*c.HeadDim, kvDim, scale, s, oc)
		}
		return nil
	})
}

// logits writes the VocabSize logits of each of n tokens (dst [n][VocabSize]) for their final
// hidden states x ([n][Dim]): output_norm per token, then the F16 head (logitF16, cpuref.Logits'
// bits) or the Q8_0 head (logitsQ8, cpuref.LogitsQ8's bits; its int8 block sums by
// dotQ8BlocksAVX2 with the AVX2 and VNNI kernels) split by vocabulary rows across the pool, each
// row read once for the n tokens; or cpuref.Logits per token for F32/BF16 matrices (it splits
// rows itself).
func (b *Backend) logits(dst, x []float32, n int) error {
	dim := b.cfg.Dim
	vocab := len(dst) / n
	xn := b.sc.normed[:n*dim]
	for t := range n {
		if err := cpuref.RMSNorm(xn[t*dim:(t+1)*dim], x[t*dim:(t+1)*dim], b.norm, b.cfg.RMSEps); err != nil {
			return err
		}
	}
	switch b.out.Type {
	case model.TypeQ8_0:
		qa, sa := b.sc.qa[:n*dim], b.sc.sa[:n]
		for t := range n {
			s, err := cpuref.QuantizeActivations(qa[t*dim:(t+1)*dim], xn[t*dim:(t+1)*dim])
			if err != nil {
				return err
			}
			sa[t] = s
		}
		return b.logitsQ8(dst, qa, sa)
	case model.TypeF16:
		data := b.out.Data
		if len(data) < 2*dim*vocab {
			return fmt.Errorf("cpu: tensor %s: shape %v needs %d bytes, found %d", b.out.Name, b.out.Shape, 2*dim*vocab, len(data))
		}
		return b.eng.pool.run(vocab, max(1, minPartWork/(scalarWork*dim*n)), func(lo, hi int) error {
			// The matrix is memory-mapped: a fault (the file shrank) becomes this part's error.
			return model.CatchFault(func() error {
				for v := lo; v < hi; v++ {
					row := data[2*v*dim : 2*(v+1)*dim]
					for t := range n {
						dst[t*vocab+v] = logitF16(xn[t*dim:(t+1)*dim], row)
					}
				}
				return nil
			})
		})
	}
	for t := range n {
		if err := cpuref.Logits(dst[t*vocab:(t+1)*vocab], xn[t*dim:(t+1)*dim], b.out); err != nil {
			return err
		}
	}
	return nil
}

// logitsQ8 is cpuref.LogitsQ8 (the q8_0 head) for n = len(s) tokens (q [n][dim] with scales s,
// dst [n][vocab]) with the rows split across the pool, each row read once for all n: per row v
// and token t, acc_vb = Σ_j w_vj*q_tj over block b (exact int32), partial[b mod LogitLanes] +=
// float32(acc_vb)*d_vb in block order, dst[t][v] = TreeSum(partial) * Rcp32(s_t).
func (b *Backend) logitsQ8(dst []float32, q []int8, s []float32) error {
	e := b.out
	n := len(s)
	dim, vocab := len(q)/n, len(dst)/n
	if len(e.Shape) != 2 || e.Shape[0] != uint64(dim) || e.Shape[1] != uint64(vocab) || dim%model.Q8_0BlockElems != 0 {
		return fmt.Errorf("cpu: logits: tensor %s is shape %v, want Q8_0 [%d, %d] (a multiple of %d columns)", e.Name, e.Shape, dim, vocab, model.Q8_0BlockElems)
	}
	blocks := dim / model.Q8_0BlockElems
	rowBytes := blocks * model.Q8_0BlockBytes
	if len(e.Data) < rowBytes*vocab {
		return fmt.Errorf("cpu: logits: tensor %s: shape %v needs %d bytes, found %d", e.Name, e.Shape, rowBytes*vocab, len(e.Data))
	}
	inv := make([]float32, n)
	for t, st := range s {
		inv[t] = cpuref.Rcp32(st)
	}
	avx2 := b.eng.kernel == KernelAVX2 || b.eng.kernel == KernelVNNI // haveVNNI implies haveAVX2
	return b.eng.pool.run(vocab, max(1, minPartWork/(dim*n)), func(lo, hi int) error {
		return model.CatchFault(func() error {
			var acc []int32
			if avx2 {
				acc = make([]int32, blocks)
			}
			for v := lo; v < hi; v++ {
				row := e.Data[v*rowBytes : (v+1)*rowBytes]
				for t := range n {
					qt := q[t*dim : (t+1)*dim]
					if avx2 {
						dotQ8BlocksAVX2(&row[0], &qt[0], blocks, &acc[0])
						dst[t*vocab+v] = float32(foldQ8(acc, row) * inv[t])
						continue
					}
					dst[t*vocab+v] = float32(logitQ8(qt, row) * inv[t])
				}
			}
			return nil
		})
	})
}

// foldQ8 is logitQ8's float part given the blocks' int32 sums acc (from dotQ8BlocksAVX2).
func foldQ8(acc []int32, row []byte) float32 {
	var partial [cpuref.LogitLanes]float32
	row = row[:len(acc)*model.Q8_0BlockBytes]
	for bl, a := range acc {
		d := f16[binary.LittleEndian.Uint16(row[bl*model.Q8_0BlockBytes:])]
		l := bl % cpuref.LogitLanes
		partial[l] = float32(partial[l] + float32(float32(a)*d))
	}
	return cpuref.TreeSum(partial[:])
}

// logitQ8 returns TreeSum of the LogitLanes partials of one Q8_0 row (before the 1/s factor).
func logitQ8(q []int8, row []byte) float32 {
	var partial [cpuref.LogitLanes]float32
	blocks := len(q) / model.Q8_0BlockElems
	for bl := range blocks {
		blk := row[bl*model.Q8_0BlockBytes : (bl+1)*model.Q8_0BlockBytes]
		d := f16[binary.LittleEndian.Uint16(blk)]
		w := blk[2 : 2+model.Q8_0BlockElems]
		qb := q[bl*model.Q8_0BlockElems : (bl+1)*model.Q8_0BlockElems]
		var a0, a1, a2, a3 int32
		for j := 0; j < model.Q8_0BlockElems; j += 4 {
			a0 += int32(int8(w[j])) * int32(qb[j])
			a1 += int32(int8(w[j+1])) * int32(qb[j+1])
			a2 += int32(int8(w[j+2])) * int32(qb[j+2])
			a3 += int32(int8(w[j+3])) * int32(qb[j+3])
		}
		l := bl % cpuref.LogitLanes
		partial[l] = float32(partial[l] + float32(float32(a0+a1+a2+a3)*d))
	}
	return cpuref.TreeSum(partial[:])
}

// applyLoRA adds the LoRA terms of a packed product's segments to its output y ([n][Σ widths],
// n = len(at): each token's row is the segments' outputs side by side, widths in order, terms[i]
// those of segment i) from the float rows of b.sc.in, token by token in cpuref.ApplyLoRA's
// arithmetic (cpuref.LaneDot per row of A and B, one product by the scaling, one sum into y: the
// same bits as cpuref), token t at the scales of its sequence at[t].seq.
func (b *Backend) applyLoRA(y []float32, at []place, terms [][]loraTerm, widths ...int) error {
	has := false
	for _, t := range terms {
		has = has || len(t) > 0
	}
	if !has {
		return nil
	}
	sc := &b.sc
	stride := 0
	for _, w := range widths {
		stride += w
	}
	sc.loraU = grow(sc.loraU, b.loraRank)
	n := len(at)
	cols := len(sc.in.x) / n
	for t := range n {
		x, off := sc.in.x[t*cols:(t+1)*cols], t*stride
		for i, w := range widths {
			for _, tm := range terms[i] {
				scale := at[t].seq.lora[tm.Adapter]
				if scale == 0 {
					continue
				}
				s, r := tm.Scaling(scale), tm.Pair.Rank()
				u := sc.loraU[:r]
				for j := range u {
					u[j] = laneDot(x, tm.a[j*cols:(j+1)*cols]) * s
				}
				out := y[off : off+w]
				for k := range out {
					out[k] += laneDot(u, tm.b[k*r:(k+1)*r])
				}
			}
			off += w
		}
	}
	return nil
}

// SetLoRAScales sets the user scale of each adapter New was given (WithLoRA), in order; 0 turns
// one off. It returns an error, changing nothing, for the wrong length or a non-finite value.
func (b *Backend) SetLoRAScales(scales []float32) error {
	if err := cpuref.LoRAScales(scales).Check(len(b.lora)); err != nil {
		return prefixed(err)
	}
	copy(b.lora, scales)
	return nil
}

// LoRAAdapters is the number of adapters New was given (WithLoRA).
func (b *Backend) LoRAAdapters() int { return len(b.lora) }
