package cpuref

import (
	"fmt"

	"github.com/bitgpu/bitgpu/model"
)

// Backend runs the BitNet b1.58 forward pass of one model on the CPU over an f16 KV cache. It
// satisfies bitgpu's runtime.Backend interface (Config, Prefill, Decode, Pos, Reset, Close). It
// reads the model's tensors in place (no copies of the weights) and is not safe for concurrent
// use.
type Backend struct {
	cfg    model.Config
	ctx    int // KV cache capacity in tokens
	embd   *model.Tensor
	out    *model.Tensor // output projection: output.weight, or token_embd when tied; Q8_0 for the q8_0 head (OutputMatrix)
	norm   []float32     // output_norm, [Dim]
	layers []layer
	kCache [][]uint16 // per layer, f16 bits [ctx][KVHeads*HeadDim]
	vCache [][]uint16
	pos    int
	closed bool
	lora   LoRAScales // per adapter (WithLoRA), the user scale in effect
}

// layer holds one transformer block's weights.
type layer struct {
	attnNorm, attnSubNorm, ffnNorm, ffnSubNorm []float32
	q, k, v, o, gate, up, down                 bitLinear
}

// bitLinear is one ternary projection and its optional extra output scale (a separate
// `*.scale` tensor, as upstream llama.cpp's `bitnet` architecture stores it; 1 when absent).
// A float projection (F16, F32 or BF16: upstream `--outtype f16` files) has f instead of w.
type bitLinear struct {
	w     *model.TernaryMatrix
	f     *model.Tensor
	scale float32
	extra bool
	lora  []LoRATerm
}

// New checks m's hyper-parameters and tensors against the README's Numerics section and returns a Backend
// with a KV cache of ctx tokens (ctx <= 0 means m.Config.ContextLength). Tensors are looked up by
// GGUF name (token_embd.weight, output_norm.weight, blk.N.{attn_norm, attn_q, attn_k, attn_v,
// attn_output, attn_sub_norm, ffn_norm, ffn_gate, ffn_up, ffn_down, ffn_sub_norm}.weight — the
// sub-norms only when Config.SubNorms; without them o_proj and down_proj quantize their input
// un-normed — and the optional output.weight and blk.N.*.scale). Projections must be I2_S, TQ1_0 or TQ2_0, or F16,
// F32 or BF16 (FloatMatMul: no activation quantization); norms and the embedding F32, F16, BF16
// (or Q8_0, Q4_K, Q6_K for the embedding and output). Errors name the tensor and give the
// expected versus found shape or type. The cache takes Layers*ctx*KVHeads*HeadDim*4 bytes
// (KVCacheBytes); before anything is allocated that is checked against the system's available
// memory (/proc/meminfo MemAvailable), and a cache that does not fit is an error naming both
// sizes and the largest --ctx that would. Options: WithLMHead (default DefaultLMHead; the q8_0
// head re-quantizes the output matrix in memory, OutputMatrix, and computes LogitsQ8).
func New(m *model.Model, ctx int, opts ...Option) (*Backend, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if m == nil {
		return nil, fmt.Errorf("cpuref: nil model")
	}
	cfg := m.Config
	if ctx <= 0 {
		ctx = cfg.ContextLength
	}
	if err := checkConfig(&cfg, ctx); err != nil {
		return nil, err
	}
	if err := checkKVCache(cfg, ctx, memAvailable()); err != nil {
		return nil, err
	}
	w, err := LoadWeights(m, cfg, o.head)
	if err != nil {
		return nil, prefixed(err)
	}
	if err := AttachLoRA(w, cfg, o.lora); err != nil {
		return nil, prefixed(err)
	}
	b := &Backend{cfg: cfg, ctx: ctx, embd: w.Embd, out: w.Out, norm: w.Norm, layers: make([]layer, cfg.Layers), lora: AdapterScales(o.lora)}
	for i, lw := range w.Layers {
		bl := func(p Projection) bitLinear {
			return bitLinear{w: p.W, f: p.F, scale: p.Scale, extra: p.Extra, lora: p.LoRA}
		}
		b.layers[i] = layer{attnNorm: lw.AttnNorm, attnSubNorm: lw.AttnSubNorm, ffnNorm: lw.FFNNorm, ffnSubNorm: lw.FFNSubNorm,
			q: bl(lw.Q), k: bl(lw.K), v: bl(lw.V), o: bl(lw.O), gate: bl(lw.Gate), up: bl(lw.Up), down: bl(lw.Down)}
	}
	b.kCache, b.vCache = NewKVCache(cfg, ctx)
	return b, nil
}

// checkConfig validates the hyper-parameters the forward pass relies on and fills defaults
// (RMSEps 1e-5, RoPEDim = HeadDim when 0).
func checkConfig(c *model.Config, ctx int) error {
	switch {
	case c.VocabSize <= 0 || c.Dim <= 0 || c.Layers <= 0 || c.FFNDim <= 0:
		return fmt.Errorf("cpuref: config needs positive VocabSize, Dim, Layers, FFNDim; found %d, %d, %d, %d", c.VocabSize, c.Dim, c.Layers, c.FFNDim)
	case c.Heads <= 0 || c.KVHeads <= 0 || c.Heads%c.KVHeads != 0:
		return fmt.Errorf("cpuref: config: Heads %d must be a positive multiple of KVHeads %d", c.Heads, c.KVHeads)
	case c.HeadDim <= 0:
		return fmt.Errorf("cpuref: config: HeadDim %d must be positive", c.HeadDim)
	case ctx <= 0:
		return fmt.Errorf("cpuref: context length %d must be positive", ctx)
	case c.Act != model.ActReLU2 && c.Act != model.ActSiLU:
		return fmt.Errorf("cpuref: config: gate activation %q, want %q or %q", c.Act, model.ActReLU2, model.ActSiLU)
	case c.RoPEMode != model.RoPENeox && c.RoPEMode != model.RoPENorm:
		return fmt.Errorf("cpuref: config: unknown RoPE mode %d", c.RoPEMode)
	case !(c.RoPEBase > 0):
		return fmt.Errorf("cpuref: config: RoPE base %v must be positive", c.RoPEBase)
	}
	if c.RoPEDim == 0 {
		c.RoPEDim = c.HeadDim
	}
	if c.RoPEDim < 0 || c.RoPEDim%2 != 0 || c.RoPEDim > c.HeadDim {
		return fmt.Errorf("cpuref: config: RoPEDim %d must be even and at most HeadDim %d", c.RoPEDim, c.HeadDim)
	}
	if c.RMSEps == 0 {
		c.RMSEps = 1e-5
	}
	return nil
}

// Weights are a model's tensors as both CPU backends read them (LoadWeights): the token
// embedding ([Dim, VocabSize] GGUF shape), the logits matrix after OutputMatrix, the output norm
// ([Dim]) and each layer's norms and projections.
type Weights struct {
	Embd, Out *model.Tensor
	Norm      []float32
	Layers    []LayerWeights
}

// LayerWeights are one block's RMSNorm weights (the sub-norms nil when Config.SubNorms is false)
// and its seven projections.
type LayerWeights struct {
	AttnNorm, AttnSubNorm, FFNNorm, FFNSubNorm []float32
	Q, K, V, O, Gate, Up, Down                 Projection
}

// LoadWeights opens and checks every tensor the forward of cfg reads from m (README Numerics),
// with head the logits head (OutputMatrix): token_embd.weight, output.weight unless tied,
// output_norm.weight, and per block the norms and the projections (LoadProjection). Errors name
// the tensor: missing, wrong shape, type or encoding.
func LoadWeights(m *model.Model, cfg model.Config, head LMHead) (*Weights, error) {
	w := &Weights{}
	t, ok := m.Tensors["token_embd.weight"]
	if !ok || t == nil {
		return nil, fmt.Errorf("missing tensor token_embd.weight")
	}
	if err := CheckShape(t, cfg.Dim, cfg.VocabSize); err != nil {
		return nil, err
	}
	w.Embd, w.Out = t, t
	if o, ok := m.Tensors["output.weight"]; ok && o != nil && !cfg.TiedEmbedding {
		if err := CheckShape(o, cfg.Dim, cfg.VocabSize); err != nil {
			return nil, err
		}
		w.Out = o
	}
	if err := CheckFloatMatrix(w.Out); err != nil {
		return nil, err
	}
	var err error
	if w.Out, err = OutputMatrix(w.Out, head); err != nil {
		return nil, err
	}
	if w.Norm, err = NormWeights(m, "output_norm.weight", cfg.Dim); err != nil {
		return nil, err
	}
	qDim, kvDim := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
	w.Layers = make([]LayerWeights, cfg.Layers)
	for i := range w.Layers {
		l := &w.Layers[i]
		p := fmt.Sprintf("blk.%d.", i)
		for _, n := range []struct {
			dst  *[]float32
			name string
			n    int
			sub  bool
		}{
			{&l.AttnNorm, "attn_norm", cfg.Dim, false}, {&l.AttnSubNorm, "attn_sub_norm", qDim, true},
			{&l.FFNNorm, "ffn_norm", cfg.Dim, false}, {&l.FFNSubNorm, "ffn_sub_norm", cfg.FFNDim, true},
		} {
			if n.sub && !cfg.SubNorms {
				continue // llama-arch ternary models: o_proj and down_proj quantize their input as is
			}
			if *n.dst, err = NormWeights(m, p+n.name+".weight", n.n); err != nil {
				return nil, err
			}
		}
		for _, pr := range []struct {
			dst        *Projection
			name       string
			cols, rows int
		}{
			{&l.Q, "attn_q", cfg.Dim, qDim}, {&l.K, "attn_k", cfg.Dim, kvDim}, {&l.V, "attn_v", cfg.Dim, kvDim},
			{&l.O, "attn_output", qDim, cfg.Dim}, {&l.Gate, "ffn_gate", cfg.Dim, cfg.FFNDim},
			{&l.Up, "ffn_up", cfg.Dim, cfg.FFNDim}, {&l.Down, "ffn_down", cfg.FFNDim, cfg.Dim},
		} {
			if *pr.dst, err = LoadProjection(m, p+pr.name, pr.cols, pr.rows); err != nil {
				return nil, err
			}
		}
	}
	return w, nil
}

// NewKVCache allocates the f16 K and V caches of cfg for ctx tokens: per layer ctx*KVHeads*HeadDim
// f16 values (uint16 bits, position-major), zeroed; KVCacheBytes is their size in bytes.
func NewKVCache(cfg model.Config, ctx int) (k, v [][]uint16) {
	kvDim := cfg.KVHeads * cfg.HeadDim
	k, v = make([][]uint16, cfg.Layers), make([][]uint16, cfg.Layers)
	for i := range k {
		k[i], v[i] = make([]uint16, ctx*kvDim), make([]uint16, ctx*kvDim)
	}
	return k, v
}

// CheckStep is the check a CPU backend's Prefill makes before touching anything: an error for a
// closed backend, no tokens, pos+len(tokens) over the ctx-token cache, or a token outside
// [0, vocab) (naming it and its index).
func CheckStep(closed bool, pos, ctx, vocab int, tokens []int) error {
	switch {
	case closed:
		return fmt.Errorf("backend is closed")
	case len(tokens) == 0:
		return fmt.Errorf("no tokens to process")
	case pos+len(tokens) > ctx:
		return fmt.Errorf("%d tokens at position %d exceed the context length %d", len(tokens), pos, ctx)
	}
	for i, t := range tokens {
		if t < 0 || t >= vocab {
			return fmt.Errorf("token %d (index %d) outside the vocabulary [0, %d)", t, i, vocab)
		}
	}
	return nil
}

// prefixed adds "cpuref: " to a non-nil error.
func prefixed(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("cpuref: %w", err)
}

// CheckShape reports whether t has GGUF shape [cols, rows] (a projection with rows outputs and
// cols inputs), as an error naming the tensor and both shapes.
func CheckShape(t *model.Tensor, cols, rows int) error {
	if len(t.Shape) != 2 || t.Shape[0] != uint64(cols) || t.Shape[1] != uint64(rows) {
		return fmt.Errorf("tensor %s: want shape [%d, %d], found %v", t.Name, cols, rows, t.Shape)
	}
	return nil
}

// CheckFloatMatrix reports whether a float matrix (an embedding, logits matrix or float
// projection) can be read row by row: its type (F32, F16, BF16, Q8_0, Q4_K or Q6_K) and byte
// count, as an error naming the tensor.
func CheckFloatMatrix(t *model.Tensor) error {
	switch t.Type {
	case model.TypeF32, model.TypeF16, model.TypeBF16, model.TypeQ8_0, model.TypeQ4_K, model.TypeQ6_K:
	default:
		return fmt.Errorf("tensor %s: want type F32, F16, BF16, Q8_0, Q4_K or Q6_K, found type %d", t.Name, uint32(t.Type))
	}
	rowBytes, err := model.EncodedSize(t.Type, int(t.Shape[0]))
	if err != nil {
		return fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	if need := rowBytes * int(t.Shape[1]); len(t.Data) < need {
		return fmt.Errorf("tensor %s: shape %v needs %d bytes, found %d", t.Name, t.Shape, need, len(t.Data))
	}
	return nil
}

// NormWeights decodes the 1-D norm weight vector name (length n; F32, F16 or BF16) to f32. Errors
// name the tensor: missing, wrong shape or type.
func NormWeights(m *model.Model, name string, n int) ([]float32, error) {
	t, ok := m.Tensors[name]
	if !ok || t == nil {
		return nil, fmt.Errorf("missing tensor %s", name)
	}
	if len(t.Shape) != 1 || t.Shape[0] != uint64(n) {
		return nil, fmt.Errorf("tensor %s: want shape [%d], found %v", name, n, t.Shape)
	}
	if t.Type != model.TypeF32 && t.Type != model.TypeF16 && t.Type != model.TypeBF16 {
		return nil, fmt.Errorf("tensor %s: want type F32, F16 or BF16, found type %d", name, uint32(t.Type))
	}
	w := make([]float32, n)
	if err := model.FloatRow(t, 0, w); err != nil {
		return nil, err
	}
	return w, nil
}

// Projection is one opened *_proj: a ternary matrix W, or a float tensor F (F16, F32 or BF16;
// FloatMatMul), and the optional extra output scale of a `bitnet` file's base+".scale" tensor
// (Extra true; Scale 1 otherwise). LoRA holds the adapters' terms on it (AttachLoRA), applied
// after the extra scale (ApplyLoRA).
type Projection struct {
	W     *model.TernaryMatrix
	F     *model.Tensor
	Scale float32
	Extra bool
	LoRA  []LoRATerm
}

// LoadProjection opens the projection base+".weight" (GGUF shape [cols, rows]) and its optional
// one-element F32 base+".scale". Errors name the tensor: missing, wrong shape, type or encoding.
func LoadProjection(m *model.Model, base string, cols, rows int) (Projection, error) {
	name := base + ".weight"
	t, ok := m.Tensors[name]
	if !ok || t == nil {
		return Projection{}, fmt.Errorf("missing tensor %s", name)
	}
	if err := CheckShape(t, cols, rows); err != nil {
		return Projection{}, err
	}
	p := Projection{Scale: 1}
	switch t.Type {
	case model.TypeF16, model.TypeF32, model.TypeBF16: // full-precision projections (FloatMatMul)
		if err := CheckFloatMatrix(t); err != nil {
			return Projection{}, err
		}
		p.F = t
	default:
		w, err := model.NewTernaryMatrix(t)
		if err != nil {
			return Projection{}, err
		}
		p.W = w
	}
	if st, ok := m.Tensors[base+".scale"]; ok && st != nil {
		if st.Type != model.TypeF32 || st.Elements() != 1 {
			return Projection{}, fmt.Errorf("tensor %s: want one F32 element, found type %d shape %v", st.Name, uint32(st.Type), st.Shape)
		}
		v := make([]float32, 1)
		if err := model.DecodeF32Row(st.Data, v); err != nil {
			return Projection{}, fmt.Errorf("tensor %s: %w", st.Name, err)
		}
		p.Scale, p.Extra = v[0], true
	}
	return p, nil
}

// Config returns the model hyper-parameters (with defaults filled: RMSEps, RoPEDim).
func (b *Backend) Config() model.Config { return b.cfg }

// Pos is the number of tokens in the KV cache.
func (b *Backend) Pos() int { return b.pos }

// Reset empties the KV cache (Pos() becomes 0). Stale cache rows are never read: attention only
// reads positions below the current one.
func (b *Backend) Reset() { b.pos = 0 }

// Close releases the KV cache; the Backend must not be used after. The model stays open (its
// owner closes it).
func (b *Backend) Close() error {
	b.kCache, b.vCache, b.layers, b.closed = nil, nil, nil, true
	return nil
}

// Decode appends token at Pos() and returns its VocabSize logits. Errors as Prefill.
func (b *Backend) Decode(token int) ([]float32, error) {
	return b.Prefill([]int{token}, false)
}

// Prefill appends tokens at positions Pos()..Pos()+len(tokens)-1 and returns logits: with
// allLogits len(tokens)*VocabSize values (row t is token t's), otherwise the last token's
// VocabSize values. Every token goes through exactly the arithmetic Decode would give it, so
// prefilling a prompt and decoding it token by token yield bit-identical logits. It returns an
// error, leaving the cache untouched, for no tokens, a token outside [0, VocabSize), a cache that
// would exceed the context length, or a closed Backend.
func (b *Backend) Prefill(tokens []int, allLogits bool) ([]float32, error) {
	if err := CheckStep(b.closed, b.pos, b.ctx, b.cfg.VocabSize, tokens); err != nil {
		return nil, prefixed(err)
	}
	var logits []float32
	err := model.CatchFault(func() (err error) {
		logits, err = b.forward(tokens, allLogits)
		return err
	})
	if err != nil {
		return nil, err
	}
	b.pos += len(tokens)
	return logits, nil
}

// forward runs the layers of the README's Numerics section over n tokens starting at b.pos:
//
//	a = attn_norm(x);  h = x + o_proj(attn_sub_norm(Attention(RoPE(q_proj(a)), RoPE(k_proj(a)), v_proj(a))))
//	f = ffn_norm(h);   x = h + down_proj(ffn_sub_norm(act(gate_proj(f)) * up_proj(f)))
//	logits = output_norm(x_L) · E^T
//
// where every *_proj is a BitLinear: QuantizeActivations per token, then TernaryMatMul.
func (b *Backend) forward(tokens []int, allLogits bool) ([]float32, error) {
	c := &b.cfg
	n := len(tokens)
	dim, qDim, kvDim, ffn := c.Dim, c.Heads*c.HeadDim, c.KVHeads*c.HeadDim, c.FFNDim
	x := make([]float32, n*dim)
	for t, tok := range tokens {
		if err := Embedding(x[t*dim:(t+1)*dim], b.embd, tok); err != nil {
			return nil, err
		}
	}
	var (
		normed = make([]float32, n*max(dim, qDim, ffn))
		q      = make([]float32, n*qDim)
		k      = make([]float32, n*kvDim)
		v      = make([]float32, n*kvDim)
		att    = make([]float32, n*qDim)
		proj   = make([]float32, n*dim)
		gate   = make([]float32, n*ffn)
		up     = make([]float32, n*ffn)
		qa     = make([]int8, n*max(dim, qDim, ffn))
		sa     = make([]float32, n)
	)
	for li := range b.layers {
		l := &b.layers[li]
		// Attention block.
		xf, err := b.normQuant(normed, qa, sa, x, l.attnNorm, n, dim)
		if err != nil {
			return nil, err
		}
		for _, p := range []struct {
			w   bitLinear
			dst []float32
		}{{l.q, q}, {l.k, k}, {l.v, v}} {
			if err := p.w.apply(p.dst, xf, qa[:n*dim], sa, b.lora); err != nil {
				return nil, err
			}
		}
		for t := range n {
			pos := b.pos + t
			if err := RoPE(q[t*qDim:(t+1)*qDim], c.Heads, c.HeadDim, c.RoPEDim, pos, c.RoPEBase, c.RoPEMode); err != nil {
				return nil, err
			}
			if err := RoPE(k[t*kvDim:(t+1)*kvDim], c.KVHeads, c.HeadDim, c.RoPEDim, pos, c.RoPEBase, c.RoPEMode); err != nil {
				return nil, err
			}
			if err := StoreKV(b.kCache[li], pos, k[t*kvDim:(t+1)*kvDim]); err != nil {
				return nil, err
			}
			if err := StoreKV(b.vCache[li], pos, v[t*kvDim:(t+1)*kvDim]); err != nil {
				return nil, err
			}
		}
		for t := range n {
			if err := Attention(att[t*qDim:(t+1)*qDim], q[t*qDim:(t+1)*qDim], b.kCache[li], b.vCache[li], b.pos+t, c.Heads, c.KVHeads, c.HeadDim); err != nil {
				return nil, err
			}
		}
		if xf, err = b.normQuant(normed, qa, sa, att, l.attnSubNorm, n, qDim); err != nil {
			return nil, err
		}
		if err := l.o.apply(proj, xf, qa[:n*qDim], sa, b.lora); err != nil {
			return nil, err
		}
		if err := Add(x, x, proj); err != nil {
			return nil, err
		}
		// Feed-forward block.
		if xf, err = b.normQuant(normed, qa, sa, x, l.ffnNorm, n, dim); err != nil {
			return nil, err
		}
		if err := l.gate.apply(gate, xf, qa[:n*dim], sa, b.lora); err != nil {
			return nil, err
		}
		if err := l.up.apply(up, xf, qa[:n*dim], sa, b.lora); err != nil {
			return nil, err
		}
		glu := ReLU2GLU
		if c.Act == model.ActSiLU {
			glu = SiLUGLU
		}
		if err := glu(gate, gate, up); err != nil {
			return nil, err
		}
		if xf, err = b.normQuant(normed, qa, sa, gate, l.ffnSubNorm, n, ffn); err != nil {
			return nil, err
		}
		if err := l.down.apply(proj, xf, qa[:n*ffn], sa, b.lora); err != nil {
			return nil, err
		}
		if err := Add(x, x, proj); err != nil {
			return nil, err
		}
	}
	first := n - 1
	if allLogits {
		first = 0
	}
	vocab := c.VocabSize
	logits := make([]float32, (n-first)*vocab)
	for t := first; t < n; t++ {
		xn := normed[:dim]
		if err := RMSNorm(xn, x[t*dim:(t+1)*dim], b.norm, c.RMSEps); err != nil {
			return nil, err
		}
		if b.out.Type == model.TypeQ8_0 { // the q8_0 head: int8 activations as for a BitLinear
			s, err := QuantizeActivations(qa[:dim], xn)
			if err != nil {
				return nil, err
			}
			if err := LogitsQ8(logits[(t-first)*vocab:(t-first+1)*vocab], qa[:dim], s, b.out); err != nil {
				return nil, err
			}
			continue
		}
		if err := Logits(logits[(t-first)*vocab:(t-first+1)*vocab], xn, b.out); err != nil {
			return nil, err
		}
	}
	return logits, nil
}

// normQuant applies RMSNorm with weights w to each of n tokens of in ([n][d]), writing the normed
// rows to normed and their int8 quantization to qa ([n][d]) with scales sa[t]. A nil w (a sub-norm
// the model does not have) quantizes in as it is (the GPU's quantize kernel), leaving normed alone.
// It returns the float rows quantized ([n][d]: normed, or in for a nil w), the input of float
// projections.
func (b *Backend) normQuant(normed []float32, qa []int8, sa, in, w []float32, n, d int) ([]float32, error) {
	for t := range n {
		row := in[t*d : (t+1)*d]
		if w != nil {
			row = normed[t*d : (t+1)*d]
			if err := RMSNorm(row, in[t*d:(t+1)*d], w, b.cfg.RMSEps); err != nil {
				return nil, err
			}
		}
		s, err := QuantizeActivations(qa[t*d:(t+1)*d], row)
		if err != nil {
			return nil, err
		}
		sa[t] = s
	}
	if w == nil {
		return in[:n*d], nil
	}
	return normed[:n*d], nil
}

// apply runs the BitLinear on quantized activations q ([n][cols], scales s) into dst
// ([n][rows]) — or, for a float projection, FloatMatMul on the float rows x ([n][cols]) — then
// multiplies by the extra output scale when the model has one, then adds the LoRA terms on x at
// the adapters' scales (ApplyLoRA).
func (bl bitLinear) apply(dst, x []float32, q []int8, s []float32, scales LoRAScales) error {
	if bl.f != nil {
		if err := FloatMatMul(dst, bl.f, x, len(s)); err != nil {
			return err
		}
	} else if err := TernaryMatMul(dst, bl.w, q, s); err != nil {
		return err
	}
	if bl.extra {
		for i := range dst {
			dst[i] *= bl.scale
		}
	}
	if len(bl.lora) == 0 {
		return nil
	}
	r := 0
	for _, t := range bl.lora {
		r = max(r, t.Pair.Rank())
	}
	return ApplyLoRA(dst, x, len(s), bl.lora, scales, make([]float32, r), make([]float32, len(dst)/len(s)))
}
