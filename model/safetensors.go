package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/bitgpu/bitgpu/internal/fsutil"
)

// safetensors container facts (huggingface/safetensors README, "Format"): an 8-byte little-endian
// header length N, N bytes of JSON mapping tensor names to {"dtype", "shape", "data_offsets":
// [begin, end]} (offsets relative to the byte after the header) plus an optional
// "__metadata__" string map, then the data.
const (
	// safetensorsMaxHeader is the largest JSON header accepted (the reference implementation's
	// limit).
	safetensorsMaxHeader = 100_000_000
	// safetensorsMetaKey is the header entry holding free-form string metadata.
	safetensorsMetaKey = "__metadata__"
)

// safetensorsDTypeSize gives the bytes per element of each safetensors dtype.
var safetensorsDTypeSize = map[string]uint64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
	"U16": 2, "I16": 2, "F16": 2, "BF16": 2,
	"U32": 4, "I32": 4, "F32": 4,
	"U64": 8, "I64": 8, "F64": 8,
}

// SafetensorsTensor is one tensor of a safetensors file. Shape is in PyTorch (row-major) order:
// Shape[0] is the outermost dimension — the reverse of GGUF order. Data aliases the file mapping.
type SafetensorsTensor struct {
	Name  string
	DType string // "BF16", "F16", "F32", "U8", ...
	Shape []uint64
	Data  []byte
}

// Safetensors is a parsed safetensors file. Tensor Data is valid until Close.
type Safetensors struct {
	Path     string
	Tensors  map[string]*SafetensorsTensor
	Metadata map[string]string
	close    func() error
}

// Close releases the file mapping. Closing twice is harmless.
func (s *Safetensors) Close() error {
	if s == nil || s.close == nil {
		return nil
	}
	c := s.close
	s.close = nil
	return c()
}

// OpenSafetensors memory-maps and parses the safetensors file at path. The header length, each
// dtype, shape and data range are checked against the file before use; errors name the file, the
// tensor and the byte offset. Call Close when done.
func OpenSafetensors(path string) (*Safetensors, error) {
	data, unmap, err := mapFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ParseSafetensors(path, data)
	if err != nil {
		_ = unmap()
		return nil, err
	}
	s.close = unmap
	return s, nil
}

// ParseSafetensors parses a whole safetensors file held in data; name labels errors. Tensor Data
// aliases data. Tensors must lie within the data section without overlapping; their byte length
// must equal the element count times the dtype size.
func ParseSafetensors(name string, data []byte) (*Safetensors, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("%s: truncated safetensors file: %d bytes, the header length alone needs 8 at byte 0", name, len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > safetensorsMaxHeader {
		return nil, fmt.Errorf("%s: safetensors header length %d at byte 0 exceeds the %d-byte limit", name, n, safetensorsMaxHeader)
	}
	if n > uint64(len(data))-8 {
		return nil, fmt.Errorf("%s: truncated safetensors file: header of %d bytes at byte 8, only %d bytes left", name, n, len(data)-8)
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data[8 : 8+n]))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%s: safetensors header (bytes 8..%d): %v", name, 8+n, err)
	}
	base := 8 + n
	dataLen := uint64(len(data)) - base
	s := &Safetensors{Path: name, Tensors: make(map[string]*SafetensorsTensor, len(raw))}
	type span struct {
		begin, end uint64
		name       string
	}
	var spans []span
	for key, v := range raw {
		if key == safetensorsMetaKey {
			if err := json.Unmarshal(v, &s.Metadata); err != nil {
				return nil, fmt.Errorf("%s: safetensors header: %s: %v", name, safetensorsMetaKey, err)
			}
			continue
		}
		var e struct {
			DType   string   `json:"dtype"`
			Shape   []uint64 `json:"shape"`
			Offsets []uint64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("%s: safetensors header: tensor %q: %v", name, key, err)
		}
		size, ok := safetensorsDTypeSize[e.DType]
		if !ok {
			return nil, fmt.Errorf("%s: safetensors header: tensor %q: unknown dtype %q", name, key, e.DType)
		}
		if len(e.Offsets) != 2 || e.Offsets[0] > e.Offsets[1] {
			return nil, fmt.Errorf("%s: safetensors header: tensor %q: data_offsets %v, want [begin, end] with begin <= end", name, key, e.Offsets)
		}
		if e.Offsets[1] > dataLen {
			return nil, fmt.Errorf("%s: tensor %q: data_offsets %v (bytes %d..%d) run past the end of the file (%d bytes)",
				name, key, e.Offsets, base+e.Offsets[0], base+e.Offsets[1], len(data))
		}
		count := uint64(1)
		for _, d := range e.Shape {
			if d != 0 && count > dataLen/d {
				return nil, fmt.Errorf("%s: tensor %q: shape %v is larger than the file", name, key, e.Shape)
			}
			count *= d
		}
		if got := e.Offsets[1] - e.Offsets[0]; got != count*size {
			return nil, fmt.Errorf("%s: tensor %q: %s %v needs %d bytes, data_offsets %v give %d (at byte %d)",
				name, key, e.DType, e.Shape, count*size, e.Offsets, got, base+e.Offsets[0])
		}
		if e.Shape == nil {
			e.Shape = []uint64{}
		}
		s.Tensors[key] = &SafetensorsTensor{Name: key, DType: e.DType, Shape: e.Shape,
			Data: data[base+e.Offsets[0] : base+e.Offsets[1] : base+e.Offsets[1]]}
		spans = append(spans, span{e.Offsets[0], e.Offsets[1], key})
	}
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].begin != spans[j].begin {
			return spans[i].begin < spans[j].begin
		}
		return spans[i].name < spans[j].name
	})
	for i := 1; i < len(spans); i++ {
		if spans[i].begin < spans[i-1].end {
			return nil, fmt.Errorf("%s: tensors %q and %q overlap at byte %d", name, spans[i-1].name, spans[i].name, base+spans[i].begin)
		}
	}
	return s, nil
}

// floats returns the tensor's elements as float32 (dtype F32, F16 or BF16; exact conversions).
func (t *SafetensorsTensor) floats(file string) ([]float32, error) {
	var elem int
	switch t.DType {
	case "F32":
		elem = 4
	case "F16", "BF16":
		elem = 2
	default:
		return nil, fmt.Errorf("%s: tensor %s: dtype %s, want F32, F16 or BF16", file, t.Name, t.DType)
	}
	out := make([]float32, len(t.Data)/elem)
	var err error
	switch t.DType {
	case "F32":
		err = DecodeF32Row(t.Data, out)
	case "F16":
		err = DecodeF16Row(t.Data, out)
	default:
		err = DecodeBF16Row(t.Data, out)
	}
	return out, err
}

// HFConfig is the part of a Hugging Face `config.json` bitgpu reads for BitNetForCausalLM
// checkpoints (microsoft/bitnet-b1.58-2B-4T and its -bf16 twin).
type HFConfig struct {
	Architectures         []string        `json:"architectures"`
	HiddenSize            int             `json:"hidden_size"`
	IntermediateSize      int             `json:"intermediate_size"`
	NumHiddenLayers       int             `json:"num_hidden_layers"`
	NumAttentionHeads     int             `json:"num_attention_heads"`
	NumKeyValueHeads      int             `json:"num_key_value_heads"`
	HeadDim               int             `json:"head_dim"`
	RMSNormEps            float64         `json:"rms_norm_eps"`
	RopeTheta             float64         `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	MaxPositionEmbeddings int             `json:"max_position_embeddings"`
	VocabSize             int             `json:"vocab_size"`
	HiddenAct             string          `json:"hidden_act"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	BOSTokenID            json.RawMessage `json:"bos_token_id"`
	EOSTokenID            json.RawMessage `json:"eos_token_id"`
	// QuantizationConfig is transformers' BitNetQuantConfig when the checkpoint has one.
	QuantizationConfig *HFQuantizationConfig `json:"quantization_config"`
	// AttentionBias and MLPBias are LlamaConfig's attention_bias and mlp_bias (transformers
	// models/llama/configuration_llama.py); bitgpu's projections have no bias, so true is refused.
	AttentionBias bool `json:"attention_bias"`
	MLPBias       bool `json:"mlp_bias"`
}

// HFQuantizationConfig is config.json's `quantization_config` for BitNet checkpoints
// (transformers utils/quantization_config.py BitNetQuantConfig): quant_method "bitnet",
// linear_class "bitlinear" (the default) or "autobitlinear", quantization_mode "offline" (the
// default) or "online".
type HFQuantizationConfig struct {
	QuantMethod      string `json:"quant_method"`
	LinearClass      string `json:"linear_class"`
	QuantizationMode string `json:"quantization_mode"`
}

// PackedScale says how a packed (uint8) projection's `weight_scale` s applies, following
// transformers' integrations/bitnet.py, which config.json's quantization_config selects:
//
//   - linear_class "autobitlinear" with quantization_mode "offline" (the official
//     microsoft/bitnet-b1.58-2B-4T checkpoint): AutoBitLinear computes F.linear(x, W)·s, so s is
//     mean|W| and multiplies (multiply true);
//   - linear_class "bitlinear" or absent, or no quantization_config (HF1BitLLM, Falcon3-1.58bit,
//     Falcon-E): BitLinear computes F.linear(x, W) / s, so s is 1/mean|W| and divides.
//
// rule describes the choice for `bitgpu inspect`. Errors name the key: a quant_method other than
// "bitnet", an unknown linear_class or quantization_mode, or "autobitlinear" in "online" mode
// (latent float weights quantized on the fly, which packed weights cannot be).
func (h *HFConfig) PackedScale() (multiply bool, rule string, err error) {
	q := h.QuantizationConfig
	if q == nil {
		return false, "weight_scale divides (BitLinear; no quantization_config)", nil
	}
	if q.QuantMethod != "" && q.QuantMethod != "bitnet" {
		return false, "", fmt.Errorf("config.json: quantization_config.quant_method = %q, want \"bitnet\"", q.QuantMethod)
	}
	mode := q.QuantizationMode
	if mode != "" && mode != "offline" && mode != "online" {
		return false, "", fmt.Errorf("config.json: quantization_config.quantization_mode = %q, want \"offline\" or \"online\"", mode)
	}
	switch q.LinearClass {
	case "", "bitlinear":
		return false, "weight_scale divides (BitLinear, quantization_config.linear_class " + strconv.Quote(q.LinearClass) + ")", nil
	case "autobitlinear":
		if mode == "online" {
			return false, "", fmt.Errorf("config.json: quantization_config: linear_class \"autobitlinear\" with quantization_mode \"online\" quantizes latent float weights; packed weights need \"offline\"")
		}
		return true, "weight_scale multiplies (AutoBitLinear, quantization_mode \"offline\")", nil
	}
	return false, "", fmt.Errorf("config.json: quantization_config.linear_class = %q, want \"bitlinear\" or \"autobitlinear\"", q.LinearClass)
}

// ReadHFConfig reads and parses a config.json file.
func ReadHFConfig(path string) (*HFConfig, error) {
	b, err := fsutil.ReadRegular(path)
	if err != nil {
		return nil, err
	}
	var h HFConfig
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return &h, nil
}

// Config converts h to a Config, by its layout (HFConfig.Layout): BitNetForCausalLM is
// architecture `bitnet-b1.58` for hidden_act "relu2" and `bitnet` for "silu", 1bitLLM's
// BitnetForCausalLM is `bitnet` (hidden_act "silu"), all three with sub-norms and NEOX RoPE, so
// HF rows need no permutation; LlamaForCausalLM (quant_method "bitnet", hidden_act "silu") is
// `llama`: no sub-norms and NORM RoPE over Q/K rows that OpenHF permutes (PermuteQKNorm); RMSEps 1e-5 and
// RoPEBase 10000 when absent; RoPEDim the head size; BOS/EOS from bos_token_id/eos_token_id (an
// integer or a list, whose first entry is used; -1 when absent or null). TiedEmbedding is
// tie_word_embeddings, or left false when absent (OpenHF then decides from lm_head.weight). It
// returns an error naming the config.json key that is missing, inconsistent or unsupported.
func (h *HFConfig) Config() (Config, error) {
	c := Config{EOT: -1}
	layout, err := h.Layout()
	if err != nil {
		return c, err
	}
	switch {
	case layout == HFBitNet && h.HiddenAct == "relu2":
		c.Arch, c.Act = ArchBitNetB158, ActReLU2
	case h.HiddenAct == "silu":
		c.Arch, c.Act = ArchBitNet, ActSiLU
	case layout == HFBitNet:
		return c, fmt.Errorf("config.json: hidden_act = %q, want \"relu2\" or \"silu\"", h.HiddenAct)
	default:
		return c, fmt.Errorf("config.json: hidden_act = %q, want \"silu\" for %s", h.HiddenAct, layout)
	}
	c.RoPEMode, c.SubNorms = RoPENeox, true
	if layout == HFLlama {
		c.Arch, c.RoPEMode, c.SubNorms = ArchLlama, RoPENorm, false
	}
	for _, b := range []struct {
		key string
		on  bool
	}{{"attention_bias", h.AttentionBias}, {"mlp_bias", h.MLPBias}} {
		if b.on {
			return c, fmt.Errorf("config.json: %s = true: projections with a bias are not supported", b.key)
		}
	}
	for _, f := range []struct {
		key string
		v   int
		dst *int
	}{
		{"vocab_size", h.VocabSize, &c.VocabSize}, {"hidden_size", h.HiddenSize, &c.Dim},
		{"num_hidden_layers", h.NumHiddenLayers, &c.Layers}, {"num_attention_heads", h.NumAttentionHeads, &c.Heads},
		{"intermediate_size", h.IntermediateSize, &c.FFNDim}, {"max_position_embeddings", h.MaxPositionEmbeddings, &c.ContextLength},
	} {
		if f.v <= 0 {
			return c, fmt.Errorf("config.json: %s = %d, want a positive integer", f.key, f.v)
		}
		*f.dst = f.v
	}
	c.KVHeads = h.NumKeyValueHeads
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	if c.KVHeads < 0 || c.Heads%c.KVHeads != 0 {
		return c, fmt.Errorf("config.json: num_key_value_heads = %d must divide num_attention_heads = %d", c.KVHeads, c.Heads)
	}
	if c.Dim%c.Heads != 0 {
		return c, fmt.Errorf("config.json: hidden_size = %d is not a multiple of num_attention_heads = %d", c.Dim, c.Heads)
	}
	c.HeadDim = c.Dim / c.Heads
	if h.HeadDim != 0 && h.HeadDim != c.HeadDim {
		return c, fmt.Errorf("config.json: head_dim = %d, expected hidden_size/num_attention_heads = %d", h.HeadDim, c.HeadDim)
	}
	c.RoPEDim = c.HeadDim
	if len(h.RopeScaling) > 0 && string(h.RopeScaling) != "null" {
		return c, fmt.Errorf("config.json: rope_scaling = %s is not supported", h.RopeScaling)
	}
	c.RMSEps, c.RoPEBase = float32(h.RMSNormEps), float32(h.RopeTheta)
	if h.RMSNormEps == 0 {
		c.RMSEps = DefaultRMSEps
	}
	if h.RopeTheta == 0 {
		c.RoPEBase = DefaultRoPEBase
	}
	if !(c.RMSEps > 0) || !(c.RoPEBase > 0) {
		return c, fmt.Errorf("config.json: rms_norm_eps = %g and rope_theta = %g must be positive", h.RMSNormEps, h.RopeTheta)
	}
	if h.TieWordEmbeddings != nil {
		c.TiedEmbedding = *h.TieWordEmbeddings
	}
	if c.BOS, err = hfTokenID("bos_token_id", h.BOSTokenID, c.VocabSize); err != nil {
		return c, err
	}
	if c.EOS, err = hfTokenID("eos_token_id", h.EOSTokenID, c.VocabSize); err != nil {
		return c, err
	}
	return c, nil
}

// hfTokenID reads a config.json token id: absent/null → -1, an integer, or a list (first entry).
func hfTokenID(key string, raw json.RawMessage, vocab int) (int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return -1, nil
	}
	var id int
	if err := json.Unmarshal(raw, &id); err != nil {
		var ids []int
		if err2 := json.Unmarshal(raw, &ids); err2 != nil || len(ids) == 0 {
			return 0, fmt.Errorf("config.json: %s = %s, want an integer or a list of integers", key, raw)
		}
		id = ids[0]
	}
	if id < 0 || id >= vocab {
		return 0, fmt.Errorf("config.json: %s = %d is outside the vocabulary of %d tokens", key, id, vocab)
	}
	return id, nil
}

// hfLayerNames maps the per-block GGUF tensor names to the Hugging Face (transformers
// modeling_bitnet) names under model.layers.N.
var hfLayerNames = map[string]string{
	"attn_norm":     "input_layernorm",
	"attn_q":        "self_attn.q_proj",
	"attn_k":        "self_attn.k_proj",
	"attn_v":        "self_attn.v_proj",
	"attn_output":   "self_attn.o_proj",
	"attn_sub_norm": "self_attn.attn_sub_norm",
	"ffn_norm":      "post_attention_layernorm",
	"ffn_gate":      "mlp.gate_proj",
	"ffn_up":        "mlp.up_proj",
	"ffn_down":      "mlp.down_proj",
	"ffn_sub_norm":  "mlp.ffn_sub_norm",
}

// HFName returns the Hugging Face BitNetForCausalLM tensor name for a GGUF tensor name:
// token_embd.weight ↔ model.embed_tokens.weight, output_norm.weight ↔ model.norm.weight,
// output.weight ↔ lm_head.weight, blk.N.attn_q.weight ↔ model.layers.N.self_attn.q_proj.weight and
// likewise (attn_k/v/output → k/v/o_proj, attn_norm → input_layernorm, attn_sub_norm →
// self_attn.attn_sub_norm, ffn_norm → post_attention_layernorm, ffn_gate/up/down →
// mlp.gate/up/down_proj, ffn_sub_norm → mlp.ffn_sub_norm). ok is false for other names.
func HFName(gguf string) (string, bool) {
	switch gguf {
	case "token_embd.weight":
		return "model.embed_tokens.weight", true
	case "output_norm.weight":
		return "model.norm.weight", true
	case "output.weight":
		return "lm_head.weight", true
	}
	rest, ok := strings.CutPrefix(gguf, "blk.")
	if !ok {
		return "", false
	}
	layer, rest, ok := strings.Cut(rest, ".")
	if !ok {
		return "", false
	}
	if _, err := strconv.Atoi(layer); err != nil {
		return "", false
	}
	base, ok := strings.CutSuffix(rest, ".weight")
	if !ok {
		return "", false
	}
	hf, ok := hfLayerNames[base]
	if !ok {
		return "", false
	}
	return "model.layers." + layer + "." + hf + ".weight", true
}

// hfFiles lists the safetensors files of a checkpoint directory: model.safetensors, or the files
// named by model.safetensors.index.json's weight_map.
func hfFiles(dir string) ([]string, error) {
	single := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(single); err == nil {
		return []string{single}, nil
	}
	indexPath := filepath.Join(dir, "model.safetensors.index.json")
	b, err := fsutil.ReadRegular(indexPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no model.safetensors or model.safetensors.index.json", dir)
	}
	if err != nil {
		return nil, err
	}
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &index); err != nil {
		return nil, fmt.Errorf("%s: %v", indexPath, err)
	}
	seen := map[string]bool{}
	var files []string
	for _, f := range index.WeightMap {
		if f != filepath.Base(f) || f == "" {
			return nil, fmt.Errorf("%s: weight_map names file %q outside the directory", indexPath, f)
		}
		if !seen[f] {
			seen[f] = true
			files = append(files, filepath.Join(dir, f))
		}
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: empty weight_map", indexPath)
	}
	return files, nil
}

// hfSource is a safetensors tensor together with the file it came from.
type hfSource struct {
	t    *SafetensorsTensor
	file string
}

// OpenHF loads a Hugging Face BitNetForCausalLM checkpoint directory: config.json (HFConfig), the
// safetensors weights (model.safetensors, or the shards of model.safetensors.index.json), the
// tokenizer (NewTokenizerFromHF) and tokenizer_config.json's chat_template (ReadHFTokenizerConfig). Tensors are converted
// to their GGUF names (HFName) and encodings, so the Model looks like one opened from GGUF:
//
//   - projections become I2_S with a per-tensor scale. A float (BF16/F16/F32) latent weight
//     [rows, cols] is quantized with QuantizeAbsmean (scale = mean|W|). A packed U8 weight
//     [rows/4, cols] with its `weight_scale` holds trit row k*(rows/4)+i, column c in bits 2k..2k+1
//     of byte (i, c) as code-1 (transformers integrations/bitnet.py unpack_weights); the I2_S scale
//     is weight_scale or 1/weight_scale as quantization_config says (HFConfig.PackedScale).
//   - RMSNorm weights become F32; the embedding (and lm_head when untied) become F16.
//
// Nothing aliases the files (they are unmapped before return). Errors name the file and tensor
// with the expected versus found shape or dtype; an unexpected tensor is an error too.
func OpenHF(dir string) (*Model, error) { return openHF(dir, nil) }

// openHF is OpenHF reporting the tensors converted so far through progress (stage "converting";
// nil: no reports).
func openHF(dir string, progress ProgressFunc) (*Model, error) {
	hc, err := ReadHFConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	cfg, err := hc.Config()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	layout, _ := hc.Layout() // Config has checked it
	files, err := hfFiles(dir)
	if err != nil {
		return nil, err
	}
	src := map[string]hfSource{}
	for _, f := range files {
		st, err := OpenSafetensors(f)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		for name, t := range st.Tensors {
			if prev, dup := src[name]; dup {
				return nil, fmt.Errorf("%s: tensor %s is also in %s", f, name, prev.file)
			}
			src[name] = hfSource{t, f}
		}
	}
	if hc.TieWordEmbeddings == nil {
		_, hasHead := src["lm_head.weight"]
		cfg.TiedEmbedding = !hasHead
	}
	// Bound the config by the checkpoint before convertHF lists every declared layer's tensors.
	lim := fileLimits{tensors: len(src)}
	for _, s := range src {
		n := shapeElems(s.t.Shape)
		if s.t.DType == "U8" || s.t.DType == "I8" {
			n = mulSat(n, 4) // packed: four trits a byte
		}
		lim.add(n)
	}
	if err := cfg.checkFits(lim, hfKeys); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	rule := hfPackedRule{}
	if hasPacked(src) {
		if rule.multiply, rule.desc, err = hc.PackedScale(); err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
	}
	tensors, err := convertHF(&cfg, layout, src, rule, progress)
	if err != nil {
		return nil, err
	}
	if err := cfg.ValidateTensors(tensors); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if err := CheckFinite(tensors); err != nil { // e.g. a bf16 value beyond f16's range
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	tok, err := NewTokenizerFromHF(dir)
	if err != nil {
		return nil, err
	}
	if tok.VocabSize() > cfg.VocabSize {
		return nil, fmt.Errorf("%s: tokenizer has %d tokens, more than vocab_size = %d in config.json", dir, tok.VocabSize(), cfg.VocabSize)
	}
	if cfg.BOS < 0 {
		cfg.BOS = tok.BOS()
	}
	if cfg.EOS < 0 {
		cfg.EOS = tok.EOS()
	}
	cfg.EOT, cfg.AddBOS = tok.EOT(), tok.AddBOS()
	tc, err := ReadHFTokenizerConfig(dir)
	if err != nil {
		return nil, err
	}
	cfg.ChatTemplate = tc.ChatTemplate
	return &Model{Path: dir, Config: cfg, Tensors: tensors, Tokenizer: tok, PackedScaleRule: rule.desc}, nil
}

// convertHF converts the checkpoint's tensors (named as layout names them) to GGUF names and
// encodings, in parallel, reporting each tensor done through progress (nil: no reports). A
// tensor the layout does not have is an error naming it and listing a layer's expected tensors.
func convertHF(cfg *Config, layout HFLayout, src map[string]hfSource, rule hfPackedRule, progress ProgressFunc) (map[string]*Tensor, error) {
	specs := cfg.TensorSpecs()
	used := map[string]bool{}
	for _, s := range specs {
		hf, _ := layout.TensorName(s.Name)
		used[hf] = true
		if s.Kind == KindWeight {
			used[strings.TrimSuffix(hf, ".weight")+".weight_scale"] = true
		}
	}
	var extra []string
	for name, s := range src {
		if !used[name] && !strings.HasSuffix(name, "rotary_emb.inv_freq") {
			extra = append(extra, name+" (in "+s.file+")")
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		head := "lm_head.weight"
		if cfg.TiedEmbedding {
			head = "no lm_head (tied)"
		}
		return nil, fmt.Errorf("tensor %s is not part of a %s model with %d layers (expected model.embed_tokens.weight, model.norm.weight, %s, and per layer model.layers.N.{%s})",
			extra[0], layout, cfg.Layers, head, layout.expectedLayer(cfg))
	}

	out := make([]*Tensor, len(specs))
	errs := make([]error, len(specs))
	done := &tensorProgress{fn: progress, stage: "converting", total: int64(len(specs))}
	workers := min(runtime.GOMAXPROCS(0), 8)
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i], errs[i] = convertHFTensor(specs[i], cfg, layout, src, rule.multiply)
				done.add()
			}
		}()
	}
	for i := range specs {
		next <- i
	}
	close(next)
	wg.Wait()
	tensors := make(map[string]*Tensor, len(specs))
	for i, s := range specs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		tensors[s.Name] = out[i]
	}
	return tensors, nil
}

// hfPackedRule is how packed projections' weight_scale applies (HFConfig.PackedScale).
type hfPackedRule struct {
	multiply bool
	desc     string
}

// hasPacked reports whether the checkpoint has a packed (U8/I8) tensor.
func hasPacked(src map[string]hfSource) bool {
	for _, s := range src {
		if s.t.DType == "U8" || s.t.DType == "I8" {
			return true
		}
	}
	return false
}

// convertHFTensor converts the HF tensor behind one GGUF tensor spec; a packed projection's
// weight_scale multiplies when multiply is true and divides otherwise (HFConfig.PackedScale). In
// the LlamaForCausalLM layout the attn_q and attn_k trits are permuted for NORM RoPE
// (PermuteQKNorm with cfg's query and KV heads) after quantizing, so the scale is that of the
// rows in file order.
func convertHFTensor(s TensorSpec, cfg *Config, layout HFLayout, src map[string]hfSource, multiply bool) (*Tensor, error) {
	hfName, _ := layout.TensorName(s.Name)
	in, ok := src[hfName]
	if !ok {
		return nil, fmt.Errorf("tensor %s is missing from the checkpoint (for %s, expected shape %v in a %s checkpoint)", hfName, s.Name, reverse(s.Shape), layout)
	}
	t, file := in.t, in.file
	// PyTorch shape order is the reverse of GGUF's.
	want := reverse(s.Shape)
	switch s.Kind {
	case KindNorm, KindEmbedding:
		if !equalShape(t.Shape, want) {
			return nil, fmt.Errorf("%s: tensor %s: expected shape %v, found %v", file, hfName, want, t.Shape)
		}
		x, err := t.floats(file)
		if err == nil {
			err = floatsFinite(file, hfName, x)
		}
		if err != nil {
			return nil, err
		}
		if s.Kind == KindNorm {
			return &Tensor{Name: s.Name, Type: TypeF32, Shape: s.Shape, Data: EncodeF32(x)}, nil
		}
		return &Tensor{Name: s.Name, Type: TypeF16, Shape: s.Shape, Data: EncodeF16(x)}, nil
	}
	rows, cols := want[0], want[1]
	var trits []int8
	var scale float32
	if t.DType == "U8" || t.DType == "I8" {
		packed := []uint64{(rows + 3) / 4, cols}
		if rows%4 != 0 || !equalShape(t.Shape, packed) {
			return nil, fmt.Errorf("%s: tensor %s: packed %s weight: expected shape %v for %d rows, found %v", file, hfName, t.DType, packed, rows, t.Shape)
		}
		scaleName := strings.TrimSuffix(hfName, ".weight") + ".weight_scale"
		ws, ok := src[scaleName]
		if !ok {
			return nil, fmt.Errorf("%s: tensor %s is packed but %s is missing", file, hfName, scaleName)
		}
		v, err := ws.t.floats(ws.file)
		if err != nil {
			return nil, err
		}
		if len(v) != 1 || !(v[0] > 0) || math.IsInf(float64(v[0]), 1) {
			return nil, fmt.Errorf("%s: tensor %s: want one positive finite value, found shape %v values %v", ws.file, scaleName, ws.t.Shape, v)
		}
		scale = 1 / v[0]
		if multiply {
			scale = v[0]
		}
		if trits, err = unpackHF(t.Data, int(rows), int(cols)); err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %v", file, hfName, err)
		}
	} else {
		if !equalShape(t.Shape, want) {
			return nil, fmt.Errorf("%s: tensor %s: expected shape %v, found %v", file, hfName, want, t.Shape)
		}
		x, err := t.floats(file)
		if err == nil {
			err = floatsFinite(file, hfName, x)
		}
		if err != nil {
			return nil, err
		}
		trits, scale = QuantizeAbsmean(x)
	}
	if layout == HFLlama {
		heads := 0
		switch {
		case strings.HasSuffix(s.Name, ".attn_q.weight"):
			heads = cfg.Heads
		case strings.HasSuffix(s.Name, ".attn_k.weight"):
			heads = cfg.KVHeads
		}
		if heads > 0 {
			var err error
			if trits, err = PermuteQKNorm(trits, int(rows), int(cols), heads); err != nil {
				return nil, fmt.Errorf("tensor %s (from %s): %v", s.Name, hfName, err)
			}
		}
	}
	data, err := EncodeI2S(trits, scale)
	if err != nil {
		return nil, fmt.Errorf("tensor %s (from %s): %v", s.Name, hfName, err)
	}
	return &Tensor{Name: s.Name, Type: TypeI2_S, Shape: s.Shape, Data: data}, nil
}

// unpackHF unpacks transformers' 2-bit weight packing: packed is [rows/4, cols] row-major and
// trit (k*(rows/4)+i, c) is ((packed[i*cols+c] >> 2k) & 3) - 1. The result is [rows, cols]
// row-major. Code 3 (which would be +2) is an error naming the byte.
func unpackHF(packed []byte, rows, cols int) ([]int8, error) {
	q := rows / 4
	trits := make([]int8, rows*cols)
	for i := 0; i < q; i++ {
		for c := 0; c < cols; c++ {
			b := packed[i*cols+c]
			for k := 0; k < 4; k++ {
				code := (b >> (2 * k)) & 3
				if code == 3 {
					return nil, fmt.Errorf("packed byte %d (row %d, column %d) holds code 3, not a trit", i*cols+c, i, c)
				}
				trits[(k*q+i)*cols+c] = int8(code) - 1
			}
		}
	}
	return trits, nil
}

// reverse returns s reversed (GGUF shape order ↔ PyTorch order).
func reverse(s []uint64) []uint64 {
	r := make([]uint64, len(s))
	for i, v := range s {
		r[len(s)-1-i] = v
	}
	return r
}

// equalShape reports whether two shapes are equal.
func equalShape(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
