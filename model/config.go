package model

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
)

// ArchLlama is llama.cpp's `llama` architecture as used by ternary LLaMA-family GGUFs (e.g.
// Llama3-8B-1.58, Falcon3-1.58bit): Q/K rows permuted for ggml's NORM RoPE, SiLU gate, and no
// sub-norms unless the file has them.
const ArchLlama Arch = "llama"

// GGUF metadata keys for the hyper-parameters; "%s" is the architecture (llama.cpp gguf-py
// `Keys.LLM`, `Keys.Attention`, `Keys.Rope`).
const (
	keyArch          = "general.architecture"
	keyVocabSize     = "%s.vocab_size"
	keyContextLength = "%s.context_length"
	keyEmbedding     = "%s.embedding_length"
	keyBlockCount    = "%s.block_count"
	keyFFN           = "%s.feed_forward_length"
	keyHeads         = "%s.attention.head_count"
	keyKVHeads       = "%s.attention.head_count_kv"
	keyKeyLength     = "%s.attention.key_length"
	keyValueLength   = "%s.attention.value_length"
	keyRMSEps        = "%s.attention.layer_norm_rms_epsilon"
	keyRoPEBase      = "%s.rope.freq_base"
	keyRoPEDim       = "%s.rope.dimension_count"
	keyHiddenAct     = "%s.hidden_activation"
)

// Defaults for optional hyper-parameter keys (llama.cpp's defaults).
const (
	DefaultRMSEps   = 1e-5
	DefaultRoPEBase = 10000
)

// TensorKind says what role a tensor plays, which fixes the types it may have.
type TensorKind int

// Tensor kinds.
const (
	// KindEmbedding is token_embd.weight or output.weight: [Dim, VocabSize], F32/F16/BF16/Q8_0.
	KindEmbedding TensorKind = iota
	// KindNorm is an RMSNorm weight: [n], F32 (F16 and BF16 accepted).
	KindNorm
	// KindWeight is a BitLinear projection: [cols, rows], I2_S, TQ1_0, TQ2_0, or a float type
	// (F32, F16, BF16, Q8_0) for full-precision baselines and upstream `bitnet` files.
	KindWeight
	// KindScale is an optional `bitnet`-arch per-tensor scale: [1], F32.
	KindScale
)

// TensorSpec is one tensor a model of a given Config has: its GGUF name, GGUF shape (Shape[0]
// innermost; a projection with rows outputs and cols inputs is [cols, rows]) and kind.
type TensorSpec struct {
	Name  string
	Shape []uint64
	Kind  TensorKind
}

// layerWeights lists a block's projections and their [cols, rows] in terms of the config.
func (c *Config) layerWeights(l int) []TensorSpec {
	d, kv, ff := uint64(c.Dim), uint64(c.KVHeads*c.HeadDim), uint64(c.FFNDim)
	q := uint64(c.Heads * c.HeadDim)
	p := "blk." + strconv.Itoa(l) + "."
	return []TensorSpec{
		{p + "attn_q.weight", []uint64{d, q}, KindWeight},
		{p + "attn_k.weight", []uint64{d, kv}, KindWeight},
		{p + "attn_v.weight", []uint64{d, kv}, KindWeight},
		{p + "attn_output.weight", []uint64{q, d}, KindWeight},
		{p + "ffn_gate.weight", []uint64{d, ff}, KindWeight},
		{p + "ffn_up.weight", []uint64{d, ff}, KindWeight},
		{p + "ffn_down.weight", []uint64{ff, d}, KindWeight},
	}
}

// TensorSpecs lists every tensor a model with this config has, in the order bitgpu writes them:
// token_embd.weight [Dim, VocabSize]; per block N: blk.N.attn_norm [Dim], attn_q [Dim, Heads*HeadDim],
// attn_k and attn_v [Dim, KVHeads*HeadDim], attn_output [Heads*HeadDim, Dim], attn_sub_norm [Dim]
// (when SubNorms), ffn_norm [Dim], ffn_gate and ffn_up [Dim, FFNDim], ffn_down [FFNDim, Dim],
// ffn_sub_norm [FFNDim] (when SubNorms), each name ending in ".weight"; then output_norm.weight
// [Dim], and output.weight [Dim, VocabSize] unless TiedEmbedding. The optional `*.scale` tensors
// are not listed.
func (c *Config) TensorSpecs() []TensorSpec {
	d, v, ff := uint64(c.Dim), uint64(c.VocabSize), uint64(c.FFNDim)
	specs := []TensorSpec{{"token_embd.weight", []uint64{d, v}, KindEmbedding}}
	for l := 0; l < c.Layers; l++ {
		p := "blk." + strconv.Itoa(l) + "."
		w := c.layerWeights(l)
		specs = append(specs, TensorSpec{p + "attn_norm.weight", []uint64{d}, KindNorm})
		specs = append(specs, w[:4]...)
		if c.SubNorms {
			specs = append(specs, TensorSpec{p + "attn_sub_norm.weight", []uint64{d}, KindNorm})
		}
		specs = append(specs, TensorSpec{p + "ffn_norm.weight", []uint64{d}, KindNorm})
		specs = append(specs, w[4:]...)
		if c.SubNorms {
			specs = append(specs, TensorSpec{p + "ffn_sub_norm.weight", []uint64{ff}, KindNorm})
		}
	}
	specs = append(specs, TensorSpec{"output_norm.weight", []uint64{d}, KindNorm})
	if !c.TiedEmbedding {
		specs = append(specs, TensorSpec{"output.weight", []uint64{d, v}, KindEmbedding})
	}
	return specs
}

// kindAllows reports whether a tensor of kind k may have type t.
func kindAllows(k TensorKind, t TensorType) bool {
	switch k {
	case KindEmbedding:
		return t == TypeF32 || t == TypeF16 || t == TypeBF16 || t == TypeQ8_0 || t == TypeQ4_K || t == TypeQ6_K
	case KindNorm:
		return t == TypeF32 || t == TypeF16 || t == TypeBF16
	case KindWeight:
		return knownType(t)
	case KindScale:
		return t == TypeF32
	}
	return false
}

// kindTypes names the types kindAllows accepts, for messages.
func kindTypes(k TensorKind) string {
	switch k {
	case KindEmbedding:
		return "F32, F16, BF16, Q8_0, Q4_K or Q6_K"
	case KindNorm:
		return "F32, F16 or BF16"
	case KindScale:
		return "F32"
	}
	return "I2_S, TQ1_0, TQ2_0, F32, F16, BF16 or Q8_0"
}

// scaleName matches the optional per-projection scale tensors of the `bitnet` architecture.
var scaleName = regexp.MustCompile(`^blk\.(\d+)\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.scale$`)

// ValidateTensors checks tensors against the config: every tensor of TensorSpecs present with
// exactly its shape and a type its kind allows, and no tensor bitgpu would not use. For the
// `bitnet` architecture a projection may have a companion `blk.N.<proj>.scale` tensor (F32, shape
// [1]): a per-tensor multiplier applied on top of the weight's own scale (see Model.WeightScale).
// The first problem found is returned as an error naming the tensor with the expected versus found
// shape or type. The config's sizes are first bounded by the tensors given (as ConfigFromGGUF
// does), so a huge Layers fails fast instead of listing every declared layer.
func (c *Config) ValidateTensors(tensors map[string]*Tensor) error {
	if err := c.checkFits(limitsOf(tensors), genericKeys); err != nil {
		return err
	}
	specs := c.TensorSpecs()
	want := make(map[string]bool, len(specs))
	for _, s := range specs {
		want[s.Name] = true
		t, ok := tensors[s.Name]
		if !ok {
			return fmt.Errorf("tensor %s is missing (expected shape %v)", s.Name, s.Shape)
		}
		if err := checkTensor(t, s); err != nil {
			return err
		}
	}
	// Report unexpected tensors in a stable (sorted) order.
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		if !want[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		if c.Arch == ArchBitNet {
			if m := scaleName.FindStringSubmatch(n); m != nil {
				if l, err := strconv.Atoi(m[1]); err == nil && l < c.Layers {
					if _, ok := tensors["blk."+m[1]+"."+m[2]+".weight"]; ok {
						if err := checkTensor(tensors[n], TensorSpec{n, []uint64{1}, KindScale}); err != nil {
							return err
						}
						continue
					}
				}
			}
		}
		return fmt.Errorf("tensor %s is not part of a %s model with %d layers", n, c.Arch, c.Layers)
	}
	return nil
}

// checkTensor compares one tensor with its spec.
func checkTensor(t *Tensor, s TensorSpec) error {
	if t == nil {
		return fmt.Errorf("tensor %s is missing (expected shape %v)", s.Name, s.Shape)
	}
	if !reflect.DeepEqual(t.Shape, s.Shape) {
		return fmt.Errorf("tensor %s: expected shape %v, found %v", s.Name, s.Shape, t.Shape)
	}
	if !kindAllows(s.Kind, t.Type) {
		return fmt.Errorf("tensor %s: type %s not allowed here (want %s)", s.Name, t.Type, kindTypes(s.Kind))
	}
	if t.Data != nil {
		size, err := TensorBytes(t.Type, t.Shape)
		if err != nil {
			return fmt.Errorf("tensor %s: %v", s.Name, err)
		}
		if uint64(len(t.Data)) != size {
			return fmt.Errorf("tensor %s: %s %v needs %d bytes, found %d", s.Name, t.Type, t.Shape, size, len(t.Data))
		}
	}
	return nil
}

// ConfigFromGGUF reads the hyper-parameters of a model from GGUF metadata and checks its tensors
// against them (ValidateTensors; tensors may be nil to skip that check). Supported architectures
// (`general.architecture`): `bitnet-b1.58` (ReLU² gate), `bitnet` (SiLU gate) — both NEOX RoPE
// with attn_sub_norm and ffn_sub_norm — and `llama` (SiLU gate, NORM RoPE, sub-norms when the
// file has them). Keys, with "<arch>" the architecture:
//
//   - required integers: <arch>.embedding_length, .block_count, .attention.head_count,
//     .feed_forward_length, .context_length;
//   - optional: <arch>.attention.head_count_kv (default head_count), .rope.freq_base (float,
//     default 10000), .rope.dimension_count (default Dim/Heads),
//     .attention.layer_norm_rms_epsilon (float, default 1e-5), .attention.key_length and
//     .value_length (must equal Dim/Heads when present);
//   - vocabulary size: <arch>.vocab_size, else the length of tokenizer.ggml.tokens (both present
//     must agree);
//   - tokenizer.ggml.bos_token_id, eos_token_id, eot_token_id (-1 when absent; EOT falls back to a
//     token spelled `<|eot_id|>`), tokenizer.ggml.add_bos_token (default true for
//     tokenizer.ggml.model "llama" and for the LLaMA-3 pre-tokenizer, as llama.cpp), and
//     tokenizer.chat_template.
//
// TiedEmbedding is true when tensors has no output.weight. Before the tensors are compared with
// the config, the sizes are bounded by what the file holds (block_count by its tensor count, 7
// projections a layer; embedding_length, feed_forward_length, the vocabulary and their products
// by its largest tensor), so an untrusted count never sizes an allocation. Errors name the key (or
// tensor) and the expected versus found value or shape.
func ConfigFromGGUF(meta map[string]any, tensors map[string]*Tensor) (Config, error) {
	var c Config
	arch, ok, err := cfgString(meta, keyArch)
	if err != nil {
		return c, err
	}
	if !ok {
		return c, fmt.Errorf("metadata key %s is missing", keyArch)
	}
	c.Arch = Arch(arch)
	switch c.Arch {
	case ArchBitNetB158, ArchBitNet25:
		// bitnet-25 is microsoft/BitNet's converter's label for the same layout; its keys keep
		// the "bitnet-25." prefix (k below uses the label as written).
		c.Arch = ArchBitNetB158
		c.Act, c.RoPEMode, c.SubNorms = ActReLU2, RoPENeox, true
	case ArchBitNet:
		c.Act, c.RoPEMode, c.SubNorms = ActSiLU, RoPENeox, true
		// Newer upstream converters say the gate activation; files without the key are the
		// 1bitLLM models, whose gate is SiLU.
		key := fmt.Sprintf(keyHiddenAct, arch)
		act, ok, err := cfgString(meta, key)
		if err != nil {
			return c, err
		}
		switch {
		case !ok || act == string(ActSiLU):
		case act == string(ActReLU2):
			c.Act = ActReLU2
		default:
			return c, fmt.Errorf("metadata key %s = %q: unsupported gate activation (want %q or %q)", key, act, ActReLU2, ActSiLU)
		}
	case ArchLlama:
		c.Act, c.RoPEMode = ActSiLU, RoPENorm
		_, hasA := tensors["blk.0.attn_sub_norm.weight"]
		_, hasF := tensors["blk.0.ffn_sub_norm.weight"]
		c.SubNorms = hasA && hasF
	default:
		return c, fmt.Errorf("metadata key %s = %q: unsupported architecture (want %s, %s, %s or %s)", keyArch, arch, ArchBitNetB158, ArchBitNet25, ArchBitNet, ArchLlama)
	}
	k := func(f string) string { return fmt.Sprintf(f, arch) }
	for _, r := range []struct {
		key string
		dst *int
	}{
		{k(keyEmbedding), &c.Dim}, {k(keyBlockCount), &c.Layers}, {k(keyHeads), &c.Heads},
		{k(keyFFN), &c.FFNDim}, {k(keyContextLength), &c.ContextLength},
	} {
		if *r.dst, err = cfgRequiredInt(meta, r.key); err != nil {
			return c, err
		}
	}
	if c.KVHeads, err = cfgOptionalInt(meta, k(keyKVHeads), c.Heads); err != nil {
		return c, err
	}
	if c.KVHeads <= 0 || c.Heads%c.KVHeads != 0 {
		return c, fmt.Errorf("metadata key %s = %d: must divide %s = %d", k(keyKVHeads), c.KVHeads, k(keyHeads), c.Heads)
	}
	if c.Dim%c.Heads != 0 {
		return c, fmt.Errorf("metadata key %s = %d: not a multiple of %s = %d", k(keyEmbedding), c.Dim, k(keyHeads), c.Heads)
	}
	c.HeadDim = c.Dim / c.Heads
	for _, key := range []string{k(keyKeyLength), k(keyValueLength)} {
		n, err := cfgOptionalInt(meta, key, c.HeadDim)
		if err != nil {
			return c, err
		}
		if n != c.HeadDim {
			return c, fmt.Errorf("metadata key %s = %d: expected %d (%s / %s)", key, n, c.HeadDim, k(keyEmbedding), k(keyHeads))
		}
	}
	if c.RoPEDim, err = cfgOptionalInt(meta, k(keyRoPEDim), c.HeadDim); err != nil {
		return c, err
	}
	if c.RoPEDim <= 0 || c.RoPEDim%2 != 0 || c.RoPEDim > c.HeadDim {
		return c, fmt.Errorf("metadata key %s = %d: expected a positive even number at most the head size %d", k(keyRoPEDim), c.RoPEDim, c.HeadDim)
	}
	if c.RoPEBase, err = cfgFloat(meta, k(keyRoPEBase), DefaultRoPEBase); err != nil {
		return c, err
	}
	if c.RMSEps, err = cfgFloat(meta, k(keyRMSEps), DefaultRMSEps); err != nil {
		return c, err
	}
	if !(c.RoPEBase > 0) || !(c.RMSEps > 0) {
		return c, fmt.Errorf("metadata keys %s = %g and %s = %g: both must be positive", k(keyRoPEBase), c.RoPEBase, k(keyRMSEps), c.RMSEps)
	}

	nTokens := -1
	if toks, ok := meta[KeyTokenizerTokens]; ok {
		s, isStr := toks.([]string)
		if !isStr {
			return c, fmt.Errorf("metadata key %s is %T, want an array of strings", KeyTokenizerTokens, toks)
		}
		nTokens = len(s)
	}
	vocab, err := cfgOptionalInt(meta, k(keyVocabSize), nTokens)
	if err != nil {
		return c, err
	}
	switch {
	case vocab <= 0:
		return c, fmt.Errorf("metadata keys %s and %s are both missing", k(keyVocabSize), KeyTokenizerTokens)
	case nTokens >= 0 && vocab != nTokens:
		return c, fmt.Errorf("metadata key %s = %d but %s has %d tokens", k(keyVocabSize), vocab, KeyTokenizerTokens, nTokens)
	}
	c.VocabSize = vocab

	for _, r := range []struct {
		key string
		dst *int
	}{{KeyTokenizerBOS, &c.BOS}, {KeyTokenizerEOS, &c.EOS}, {KeyTokenizerEOT, &c.EOT}} {
		if *r.dst, err = cfgOptionalInt(meta, r.key, -1); err != nil {
			return c, err
		}
		if *r.dst < -1 || *r.dst >= c.VocabSize {
			return c, fmt.Errorf("metadata key %s = %d: outside the vocabulary of %d tokens", r.key, *r.dst, c.VocabSize)
		}
	}
	if c.EOT < 0 {
		if toks, ok := meta[KeyTokenizerTokens].([]string); ok {
			for i, s := range toks {
				if s == "<|eot_id|>" {
					c.EOT = i
					break
				}
			}
		}
	}
	tokModel, _, err := cfgString(meta, KeyTokenizerModel)
	if err != nil {
		return c, err
	}
	pre, _, err := cfgString(meta, KeyTokenizerPre)
	if err != nil {
		return c, err
	}
	c.AddBOS = tokModel == "llama" || pre == "llama-bpe" || pre == "llama3"
	if v, ok := meta[KeyTokenizerAddBOS]; ok {
		b, isBool := v.(bool)
		if !isBool {
			return c, fmt.Errorf("metadata key %s is %T, want bool", KeyTokenizerAddBOS, v)
		}
		c.AddBOS = b
	}
	if c.BOS < 0 {
		c.AddBOS = false
	}
	if c.ChatTemplate, _, err = cfgString(meta, KeyChatTemplate); err != nil {
		return c, err
	}
	if tensors != nil {
		_, hasOutput := tensors["output.weight"]
		c.TiedEmbedding = !hasOutput
		mk := func(f string) string { return "metadata key " + k(f) }
		keys := configKeys{layers: mk(keyBlockCount), dim: mk(keyEmbedding), ffn: mk(keyFFN), where: "the file"}
		keys.vocab = mk(keyVocabSize)
		if _, ok := meta[k(keyVocabSize)]; !ok {
			keys.vocab = "the length of " + KeyTokenizerTokens
		}
		if err := c.checkFits(limitsOf(tensors), keys); err != nil {
			return c, err
		}
		if err := c.ValidateTensors(tensors); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Check verifies the internal consistency of c (positive sizes, heads dividing the width, KV
// heads dividing heads, an even RoPE dimension within the head) and returns an error naming the
// first field that is wrong.
func (c *Config) Check() error {
	switch {
	case c.VocabSize <= 0 || c.Dim <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.FFNDim <= 0 || c.ContextLength <= 0:
		return fmt.Errorf("config: vocab %d, dim %d, layers %d, heads %d, kv heads %d, ffn %d, ctx %d: all must be positive",
			c.VocabSize, c.Dim, c.Layers, c.Heads, c.KVHeads, c.FFNDim, c.ContextLength)
	case c.Dim%c.Heads != 0:
		return fmt.Errorf("config: dim %d is not a multiple of heads %d", c.Dim, c.Heads)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("config: heads %d is not a multiple of kv heads %d", c.Heads, c.KVHeads)
	case c.HeadDim != c.Dim/c.Heads:
		return fmt.Errorf("config: head dim %d, expected dim/heads = %d", c.HeadDim, c.Dim/c.Heads)
	case c.RoPEDim <= 0 || c.RoPEDim%2 != 0 || c.RoPEDim > c.HeadDim:
		return fmt.Errorf("config: rope dim %d must be even and in (0, %d]", c.RoPEDim, c.HeadDim)
	case !(c.RoPEBase > 0) || !(c.RMSEps > 0):
		return fmt.Errorf("config: rope base %g and rms eps %g must be positive", c.RoPEBase, c.RMSEps)
	}
	return nil
}

// GGUFMetadata returns the hyper-parameter keys of c in GGUF form (general.architecture, then
// <arch>.vocab_size, context_length, embedding_length, block_count, feed_forward_length,
// rope.dimension_count, attention.head_count, attention.head_count_kv, rope.freq_base,
// attention.layer_norm_rms_epsilon), integers as uint32 and floats as float32, in that order. The
// tokenizer keys are not included.
func (c *Config) GGUFMetadata() (keys []string, meta map[string]any) {
	a := string(c.Arch)
	meta = map[string]any{}
	add := func(k string, v any) { keys = append(keys, k); meta[k] = v }
	add(keyArch, a)
	add(fmt.Sprintf(keyVocabSize, a), uint32(c.VocabSize))
	add(fmt.Sprintf(keyContextLength, a), uint32(c.ContextLength))
	add(fmt.Sprintf(keyEmbedding, a), uint32(c.Dim))
	add(fmt.Sprintf(keyBlockCount, a), uint32(c.Layers))
	add(fmt.Sprintf(keyFFN, a), uint32(c.FFNDim))
	add(fmt.Sprintf(keyRoPEDim, a), uint32(c.RoPEDim))
	add(fmt.Sprintf(keyHeads, a), uint32(c.Heads))
	add(fmt.Sprintf(keyKVHeads, a), uint32(c.KVHeads))
	add(fmt.Sprintf(keyRoPEBase, a), c.RoPEBase)
	add(fmt.Sprintf(keyRMSEps, a), c.RMSEps)
	return keys, meta
}

// cfgString reads a string key; ok is false when it is absent.
func cfgString(meta map[string]any, key string) (string, bool, error) {
	v, ok := meta[key]
	if !ok {
		return "", false, nil
	}
	s, isStr := v.(string)
	if !isStr {
		return "", false, fmt.Errorf("metadata key %s is %T, want string", key, v)
	}
	return s, true, nil
}

// cfgInt converts a metadata integer of any width to int.
func cfgInt(key string, v any) (int, error) {
	var n int64
	switch x := v.(type) {
	case uint8:
		n = int64(x)
	case int8:
		n = int64(x)
	case uint16:
		n = int64(x)
	case int16:
		n = int64(x)
	case uint32:
		n = int64(x)
	case int32:
		n = int64(x)
	case int64:
		n = x
	case uint64:
		if x > math.MaxInt32 {
			return 0, fmt.Errorf("metadata key %s = %d is out of range", key, x)
		}
		n = int64(x)
	default:
		return 0, fmt.Errorf("metadata key %s is %T, want an integer", key, v)
	}
	if n > math.MaxInt32 || n < math.MinInt32 {
		return 0, fmt.Errorf("metadata key %s = %d is out of range", key, n)
	}
	return int(n), nil
}

// cfgRequiredInt reads a positive integer key that must be present.
func cfgRequiredInt(meta map[string]any, key string) (int, error) {
	v, ok := meta[key]
	if !ok {
		return 0, fmt.Errorf("metadata key %s is missing", key)
	}
	n, err := cfgInt(key, v)
	if err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, fmt.Errorf("metadata key %s = %d: expected a positive integer", key, n)
	}
	return n, nil
}

// cfgOptionalInt reads an integer key, def when absent.
func cfgOptionalInt(meta map[string]any, key string, def int) (int, error) {
	v, ok := meta[key]
	if !ok {
		return def, nil
	}
	return cfgInt(key, v)
}

// cfgFloat reads a float key (float32 or float64), def when absent.
func cfgFloat(meta map[string]any, key string, def float32) (float32, error) {
	v, ok := meta[key]
	if !ok {
		return def, nil
	}
	switch x := v.(type) {
	case float32:
		return x, nil
	case float64:
		return float32(x), nil
	}
	return 0, fmt.Errorf("metadata key %s is %T, want a float", key, v)
}
