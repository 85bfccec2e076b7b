package model

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
)

// SynthOptions describes a random-weight BitNet b1.58 model (architecture `bitnet-b1.58`: ReLU²
// gate, sub-norms, NEOX RoPE, tied F16 embedding, unless Family says otherwise). Zero fields take
// the tiny preset's values (SynthPreset("tiny")); Seed 0 is a seed like any other.
type SynthOptions struct {
	// Family picks the layout of a public ternary family (SynthFamilies); "" is "2b4t".
	Family  string
	Vocab   int // tokens, at least 259 (256 byte tokens + 3 special tokens)
	Dim     int // hidden width
	Layers  int // transformer blocks
	Heads   int // query heads; Dim must be a multiple
	KVHeads int // key/value heads; must divide Heads
	FFN     int // feed-forward width
	Ctx     int // context length in tokens

	RoPEBase float32 // rope.freq_base
	RMSEps   float32 // attention.layer_norm_rms_epsilon

	// Type encodes the projection weights: TypeI2_S (default; rows*cols a multiple of 128),
	// TypeTQ2_0 or TypeTQ1_0 (inputs a multiple of 256, one f16 scale per 256-element block), or
	// TypeF16 (the full-precision baseline: the same trit*scale values stored as f16).
	Type TensorType
	Seed uint64
	// BlockScales gives TQ1_0/TQ2_0 tensors a different scale in every 256-element block (as a
	// TQ quantizer working from float weights produces). Without it every block of a tensor
	// shares one scale, as in a BitNet b1.58 checkpoint, whose weight scale is per tensor.
	BlockScales bool
	// Progress, when not nil, receives the bytes of the file written so far (stage "writing").
	// It does not change the bytes written.
	Progress ProgressFunc
}

// SynthPreset returns the options of a named preset:
//
//   - "tiny": vocab 300, dim 256, 2 layers, 4 heads, 2 KV heads (head size 64), FFN 768,
//     context 256, RoPE base 10000, eps 1e-5 — every width a multiple of 256 so all weight types
//     work.
//   - "2b4t": the shapes of BitNet b1.58 2B4T — vocab 128256, dim 2560, 30 layers, 20 heads,
//     5 KV heads, FFN 6912, context 4096, RoPE base 500000, eps 1e-5 (332 tensors, about 1.2 GB
//     in I2_S).
//
// Type is I2_S and Seed 0. An unknown name is an error.
func SynthPreset(name string) (SynthOptions, error) {
	switch name {
	case "tiny", "":
		return SynthOptions{Vocab: 300, Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, FFN: 768, Ctx: 256,
			RoPEBase: 10000, RMSEps: 1e-5, Type: TypeI2_S}, nil
	case "2b4t":
		return SynthOptions{Vocab: 128256, Dim: 2560, Layers: 30, Heads: 20, KVHeads: 5, FFN: 6912, Ctx: 4096,
			RoPEBase: 500000, RMSEps: 1e-5, Type: TypeI2_S}, nil
	}
	return SynthOptions{}, fmt.Errorf("synth: unknown preset %q (want tiny or 2b4t)", name)
}

// withDefaults fills zero fields from the tiny preset.
func (o SynthOptions) withDefaults() SynthOptions {
	d, _ := SynthPreset("tiny")
	set := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	set(&o.Vocab, d.Vocab)
	set(&o.Dim, d.Dim)
	set(&o.Layers, d.Layers)
	set(&o.Heads, d.Heads)
	set(&o.KVHeads, d.KVHeads)
	set(&o.FFN, d.FFN)
	set(&o.Ctx, d.Ctx)
	if o.RoPEBase == 0 {
		o.RoPEBase = d.RoPEBase
	}
	if o.RMSEps == 0 {
		o.RMSEps = d.RMSEps
	}
	if o.Type == 0 { // TypeF32 is not a weight type synth writes, so 0 means "unset"
		o.Type = d.Type
	}
	return o
}

// Synthetic special tokens and chat template.
const (
	synthBOS = "<|begin_of_text|>"
	synthEOS = "<|end_of_text|>"
	synthEOT = "<|eot_id|>"
	// SynthChatTemplate is the Jinja chat template synthetic models carry, in the BitNet b1.58 2B4T
	// layout: "Role: content<|eot_id|>" per message, BOS first, "Assistant: " to generate.
	SynthChatTemplate = "{% for message in messages %}{% set content = message['role'] | capitalize + ': ' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)

// SynthFamilies are the layouts SynthOptions.Family names, each as the public checkpoints of the
// family lay it out in GGUF:
//
//   - "2b4t": microsoft/bitnet-b1.58-2B-4T — arch bitnet-b1.58, sub-norms, ReLU² gate, NEOX RoPE,
//     tied embedding (config.json hidden_act "relu2", tie_word_embeddings true).
//   - "onebit": 1bitLLM/bitnet_b1_58-* as upstream llama.cpp converts them — arch bitnet,
//     sub-norms, SiLU gate, NEOX RoPE, a separate output.weight.
//   - "llama158": HF1BitLLM/Llama3-8B-1.58-100B-tokens, tiiuae/Falcon3-*-1.58bit and Falcon-E as
//     llama.cpp converts LlamaForCausalLM — arch llama, no sub-norms, SiLU gate, NORM RoPE (Q/K
//     rows permuted by the converter), a separate F16 output.weight.
var SynthFamilies = []string{"2b4t", "onebit", "llama158"}

// Config returns the model configuration the options describe (after filling defaults), or an
// error naming the option that is inconsistent: a vocabulary under 259, sizes not positive, Dim
// not a multiple of Heads, KVHeads not dividing Heads, an odd head size, or widths the weight
// type cannot encode; or a *SynthSizeError naming the option when the shapes exceed a SynthMax*
// bound (a file over SynthMaxBytes, say).
func (o SynthOptions) Config() (Config, error) {
	o = o.withDefaults()
	c := Config{
		Arch: ArchBitNetB158, VocabSize: o.Vocab, Dim: o.Dim, Layers: o.Layers, Heads: o.Heads,
		KVHeads: o.KVHeads, FFNDim: o.FFN, RoPEBase: o.RoPEBase, RMSEps: o.RMSEps,
		ContextLength: o.Ctx, Act: ActReLU2, RoPEMode: RoPENeox, TiedEmbedding: true, SubNorms: true,
		BOS: o.Vocab - 3, EOS: o.Vocab - 2, EOT: o.Vocab - 1, AddBOS: true, ChatTemplate: SynthChatTemplate,
	}
	switch o.Family {
	case "", "2b4t":
	case "onebit":
		c.Arch, c.Act, c.TiedEmbedding = ArchBitNet, ActSiLU, false
	case "llama158":
		c.Arch, c.Act, c.RoPEMode, c.SubNorms, c.TiedEmbedding = ArchLlama, ActSiLU, RoPENorm, false, false
	default:
		return c, fmt.Errorf("synth: family %q: want one of %s", o.Family, strings.Join(SynthFamilies, ", "))
	}
	if o.Vocab < 259 {
		return c, fmt.Errorf("synth: vocab %d is below the 259 tokens of the byte alphabet and 3 special tokens", o.Vocab)
	}
	if o.Dim > 0 && o.Heads > 0 && o.Dim%o.Heads == 0 {
		c.HeadDim = o.Dim / o.Heads
		c.RoPEDim = c.HeadDim
	}
	if err := c.Check(); err != nil {
		return c, fmt.Errorf("synth: %v", err)
	}
	if c.HeadDim%2 != 0 {
		return c, fmt.Errorf("synth: head size %d (dim/heads) must be even for RoPE", c.HeadDim)
	}
	switch o.Type {
	case TypeI2_S, TypeF16:
	case TypeTQ1_0, TypeTQ2_0:
		for _, w := range []struct {
			name string
			n    int
		}{{"dim", o.Dim}, {"ffn", o.FFN}} {
			if w.n%TQBlockElems != 0 {
				return c, fmt.Errorf("synth: %s weights need every input width to be a multiple of %d; %s is %d", o.Type, TQBlockElems, w.name, w.n)
			}
		}
	default:
		return c, fmt.Errorf("synth: weight type %s is not one of I2_S, TQ2_0, TQ1_0, F16", o.Type)
	}
	if err := o.checkSynthSize(c); err != nil {
		return c, err
	}
	for _, s := range c.TensorSpecs() {
		if _, err := TensorBytes(o.weightType(s.Kind), s.Shape); err != nil {
			return c, fmt.Errorf("synth: tensor %s: %v", s.Name, err)
		}
	}
	return c, nil
}

// weightType is the GGUF type synth writes for a tensor kind.
func (o SynthOptions) weightType(k TensorKind) TensorType {
	switch k {
	case KindWeight:
		return o.Type
	case KindEmbedding:
		return TypeF16
	}
	return TypeF32
}

// synthHandMerges are English-like merges (GPT-2 byte-level form, "Ġ" = space) taken first, so
// that small synthetic vocabularies still merge common text. Each part exists before it is used.
var synthHandMerges = []string{
	"Ġ t", "h e", "Ġ a", "i n", "Ġt he", "e r", "o n", "Ġ s", "r e", "a t",
	"e n", "Ġ w", "o r", "i s", "Ġ c", "a n", "e s", "Ġ o", "i t", "n g",
	"in g", "Ġ i", "Ġa n", "Ġan d", "Ġ b", "Ġ h", "Ġ f", "Ġ m", "o u", "l l",
	"Ġ p", "Ġo f", "Ġt o", "Ġi s", "Ġ d", "' s", "Ġw or", "Ġwor l", "Ġworl d", "Ġh e",
	"l o", "he l", "hel lo", "Ġ l", "Ġ n",
}

// SynthTokenizerMetadata returns the GGUF tokenizer keys (in order) of a synthetic byte-level BPE
// vocabulary of exactly vocab tokens (at least 259): ids 0..255 are the bytes 0x00..0xFF in GPT-2's
// byte-to-unicode form; then merges — first a fixed list of English merges ("Ġ t", "h e",
// "Ġt he", ...), then, to fill larger vocabularies, every lower-case letter word of growing length
// with and without a leading "Ġ", each built from its prefix and its last letter; then
// `<|begin_of_text|>` (BOS), `<|end_of_text|>` (EOS) and `<|eot_id|>` (EOT) as control tokens,
// the last three ids. Keys: tokenizer.ggml.model "gpt2", pre "llama-bpe", tokens, token_type
// (1 normal, 3 control), merges, bos/eos/eot ids, add_bos_token true, and tokenizer.chat_template
// (SynthChatTemplate).
func SynthTokenizerMetadata(vocab int) ([]string, map[string]any, error) {
	if vocab < 259 {
		return nil, nil, fmt.Errorf("synth: vocab %d is below the 259 tokens of the byte alphabet and 3 special tokens", vocab)
	}
	tokens := make([]string, 0, vocab)
	have := make(map[string]bool, vocab)
	for b := 0; b < 256; b++ {
		s := ByteLevelEncode(string([]byte{byte(b)}))
		tokens = append(tokens, s)
		have[s] = true
	}
	nMerges := vocab - 256 - 3
	merges := make([]string, 0, nMerges)
	add := func(left, right string) bool {
		if len(merges) == nMerges {
			return false
		}
		if !have[left] || !have[right] || have[left+right] {
			return true // skip: a part is missing or the result exists already
		}
		merges = append(merges, left+" "+right)
		tokens = append(tokens, left+right)
		have[left+right] = true
		return true
	}
	for _, m := range synthHandMerges {
		l, r, _ := strings.Cut(m, " ")
		if !add(l, r) {
			break
		}
	}
	// Words over a..z of length n (bare), then with a leading space ("Ġ"), n = 1, 2, ...; bare
	// words of length 1 are the byte tokens themselves.
	const space = "Ġ"
	words := []string{""}
	for n := 1; len(merges) < nMerges; n++ {
		var next []string
		for _, w := range words {
			for c := 'a'; c <= 'z'; c++ {
				next = append(next, w+string(c))
			}
		}
		words = next
		for _, w := range words {
			if n > 1 {
				add(w[:n-1], w[n-1:])
			}
		}
		for _, w := range words {
			add(space+w[:n-1], w[n-1:])
		}
	}
	types := make([]int32, vocab)
	for i := range types {
		types[i] = int32(TokenNormal)
	}
	for i, s := range []string{synthBOS, synthEOS, synthEOT} {
		tokens = append(tokens, s)
		types[vocab-3+i] = int32(TokenControl)
	}
	keys := []string{KeyTokenizerModel, KeyTokenizerPre, KeyTokenizerTokens, KeyTokenizerTokenType, KeyTokenizerMerges,
		KeyTokenizerBOS, KeyTokenizerEOS, KeyTokenizerEOT, KeyTokenizerAddBOS, KeyChatTemplate}
	meta := map[string]any{
		KeyTokenizerModel:     "gpt2",
		KeyTokenizerPre:       "llama-bpe",
		KeyTokenizerTokens:    tokens,
		KeyTokenizerTokenType: types,
		KeyTokenizerMerges:    merges,
		KeyTokenizerBOS:       uint32(vocab - 3),
		KeyTokenizerEOS:       uint32(vocab - 2),
		KeyTokenizerEOT:       uint32(vocab - 1),
		KeyTokenizerAddBOS:    true,
		KeyChatTemplate:       SynthChatTemplate,
	}
	return keys, meta, nil
}

// synthChunk is the number of elements generated from one random stream; fixing it makes the
// output independent of how many goroutines generate it.
const synthChunk = 1 << 16

// synthScalarStream is the chunk index of the stream that gives a tensor's scales and norm values.
const synthScalarStream = 1<<32 - 1

// synthRNG returns the random stream for chunk c of tensor t of a model seeded with seed
// (PCG-DXSM, math/rand/v2, whose output sequence is fixed by its specification).
func synthRNG(seed uint64, t, c int) *rand.PCG {
	return rand.NewPCG(seed, uint64(t)<<40^uint64(c)^0x9E3779B97F4A7C15)
}

// unitFloat maps 53 random bits to [0, 1).
func unitFloat(x uint64) float64 { return float64(x>>11) * (1.0 / (1 << 53)) }

// parallelChunks runs fn(c, lo, hi) over [0, n) in chunks of synthChunk on up to GOMAXPROCS
// goroutines.
func parallelChunks(n int, fn func(c, lo, hi int)) {
	chunks := (n + synthChunk - 1) / synthChunk
	workers := min(runtime.GOMAXPROCS(0), chunks)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for c := w; c < chunks; c += workers {
				fn(c, c*synthChunk, min(n, (c+1)*synthChunk))
			}
		}(w)
	}
	wg.Wait()
}

// synthTrits fills n uniform trits in {-1, 0, 1} for tensor index t.
func synthTrits(seed uint64, t, n int) []int8 {
	trits := make([]int8, n)
	parallelChunks(n, func(c, lo, hi int) {
		r := synthRNG(seed, t, c)
		for i := lo; i < hi; {
			x := r.Uint64()
			// 32 base-3 digits of a uniform 64-bit value are uniform to within 3^32/2^64 ≈ 1e-4.
			for k := 0; k < 32 && i < hi; k++ {
				trits[i] = int8(x%3) - 1
				x /= 3
				i++
			}
		}
	})
	return trits
}

// synthTensor returns the encoded data of one tensor: norms 1 ± 0.1 (uniform), projections
// uniform trits with scales (1/sqrt(cols)) * U(0.75, 1.25) — per tensor, or for TQ1_0/TQ2_0 with
// BlockScales per 256-block — so each output has about the variance of its input. The embedding is written by
// writeSynthEmbedding instead.
func (o SynthOptions) synthTensor(idx int, s TensorSpec) ([]byte, error) {
	r := synthRNG(o.Seed, idx, synthScalarStream)
	n := 1
	for _, d := range s.Shape {
		n *= int(d)
	}
	switch s.Kind {
	case KindNorm:
		w := make([]float32, n)
		for i := range w {
			w[i] = float32(1 + 0.2*(unitFloat(r.Uint64())-0.5))
		}
		return EncodeF32(w), nil
	case KindWeight:
		cols := int(s.Shape[0])
		base := 1 / math.Sqrt(float64(cols))
		jitter := func() float32 { return float32(base * (0.75 + 0.5*unitFloat(r.Uint64()))) }
		trits := synthTrits(o.Seed, idx, n)
		switch o.Type {
		case TypeI2_S:
			return EncodeI2S(trits, jitter())
		case TypeTQ1_0, TypeTQ2_0:
			scales := make([]float32, n/TQBlockElems)
			shared := jitter()
			for i := range scales {
				scales[i] = shared
				if o.BlockScales {
					scales[i] = jitter()
				}
			}
			if o.Type == TypeTQ1_0 {
				return EncodeTQ1_0(trits, scales)
			}
			return EncodeTQ2_0(trits, scales)
		case TypeF16:
			scale := jitter()
			out := make([]byte, 2*n)
			parallelChunks(n, func(_, lo, hi int) {
				for i := lo; i < hi; i++ {
					binary.LittleEndian.PutUint16(out[2*i:], F32ToF16(float32(trits[i])*scale))
				}
			})
			return out, nil
		}
	}
	return nil, fmt.Errorf("synth: tensor %s: nothing to generate for kind %d", s.Name, s.Kind)
}

// writeSynthEmbedding streams an F16 embedding of n elements drawn uniformly from 4096 evenly
// spaced levels spanning ±sqrt(3/dim) (standard deviation about 1/sqrt(dim), so tied-embedding
// logits have about unit variance), 12 random bits per element.
func writeSynthEmbedding(w io.Writer, seed uint64, idx, n, dim int) error {
	a := math.Sqrt(3 / float64(dim))
	var levels [4096]uint16
	for i := range levels {
		levels[i] = F32ToF16(float32(a * (2*(float64(i)+0.5)/4096 - 1)))
	}
	const group = 64 * synthChunk
	buf := make([]byte, 2*min(n, group))
	for lo := 0; lo < n; lo += group {
		hi := min(n, lo+group)
		part := buf[:2*(hi-lo)]
		parallelChunks(hi-lo, func(c, clo, chi int) {
			r := synthRNG(seed, idx, lo/synthChunk+c)
			for i := clo; i < chi; {
				x := r.Uint64()
				for k := 0; k < 5 && i < chi; k++ {
					binary.LittleEndian.PutUint16(part[2*i:], levels[x&4095])
					x >>= 12
					i++
				}
			}
		})
		if _, err := w.Write(part); err != nil {
			return err
		}
	}
	return nil
}

// WriteSynthetic writes a random-weight GGUF (version 3) of the model opt describes (see
// SynthOptions and SynthPreset) to path: architecture `bitnet-b1.58` with the hyper-parameter keys
// of Config.GGUFMetadata plus general.name, the synthetic tokenizer of SynthTokenizerMetadata,
// and the tensors of Config.TensorSpecs — F16 token_embd (tied), F32 norms, projections in
// opt.Type (distributions on synthTensor). The same options and seed give the same bytes on every
// machine. The file is written to a temporary name and renamed, so an error leaves nothing behind.
// Errors name the option or tensor at fault, or come from the file system.
func WriteSynthetic(path string, opt SynthOptions) error {
	opt = opt.withDefaults()
	cfg, err := opt.Config()
	if err != nil {
		return err
	}
	keys, meta := cfg.GGUFMetadata()
	keys = append(keys[:1], append([]string{"general.name"}, keys[1:]...)...)
	meta["general.name"] = "bitgpu synthetic " + strings.ToLower(opt.Type.String())
	tkeys, tmeta, err := SynthTokenizerMetadata(opt.Vocab)
	if err != nil {
		return err
	}
	for _, k := range tkeys {
		keys = append(keys, k)
		meta[k] = tmeta[k]
	}
	specs := cfg.TensorSpecs()
	infos := make([]TensorInfo, len(specs))
	for i, s := range specs {
		infos[i] = TensorInfo{Name: s.Name, Type: opt.weightType(s.Kind), Shape: s.Shape}
	}
	return WriteFileAtomic(path, withProgress(opt.Progress, func(w io.Writer, setTotal func(int64)) error {
		e, err := NewGGUFEncoder(w, 3, keys, meta, infos)
		if err != nil {
			return err
		}
		setTotal(int64(e.Size()))
		for i, s := range specs {
			if s.Kind == KindEmbedding {
				if err := writeSynthEmbedding(e, opt.Seed, i, int(s.Shape[0]*s.Shape[1]), cfg.Dim); err != nil {
					return err
				}
				continue
			}
			data, err := opt.synthTensor(i, s)
			if err != nil {
				return err
			}
			if err := e.WriteTensor(s.Name, data); err != nil {
				return err
			}
		}
		return e.Close()
	}))
}
