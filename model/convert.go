package model

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
)

// TernaryTypeByName returns the ternary tensor type a command line names: "i2_s", "tq2_0" or
// "tq1_0" (case-insensitive). Any other name is an error that lists the three.
func TernaryTypeByName(name string) (TensorType, error) {
	switch strings.ToLower(name) {
	case "i2_s":
		return TypeI2_S, nil
	case "tq2_0":
		return TypeTQ2_0, nil
	case "tq1_0":
		return TypeTQ1_0, nil
	}
	return 0, fmt.Errorf("tensor type %q: want i2_s, tq2_0 or tq1_0", name)
}

// tokenizerKeyOrder is the order in which HFToGGUF writes the tokenizer keys (llama.cpp's
// convert_hf_to_gguf order); keys not listed follow in name order.
var tokenizerKeyOrder = []string{
	KeyTokenizerModel, KeyTokenizerPre, KeyTokenizerTokens, KeyTokenizerScores, KeyTokenizerTokenType,
	KeyTokenizerMerges, KeyTokenizerBOS, KeyTokenizerEOS, KeyTokenizerEOT, KeyTokenizerUNK,
	KeyTokenizerAddBOS, KeyTokenizerAddSpace,
}

// HFToGGUF loads the Hugging Face checkpoint directory dir (OpenHF: config.json, safetensors,
// tokenizer.json, tokenizer_config.json; any HFLayout) and lays it out as a GGUF ready for
// WriteGGUF with the architecture and tensor names llama.cpp uses. BitNetForCausalLM is laid out
// as the official BitNet b1.58 2B4T GGUF: architecture from hidden_act (`bitnet-b1.58` for
// relu2), Q/K rows in Hugging Face order (the architecture implies NEOX RoPE, so no
// permutation). 1bitLLM's BitnetForCausalLM becomes `bitnet` (NEOX, Q/K in HF order, sub-norms
// as blk.N.attn_sub_norm / ffn_sub_norm, lm_head as output.weight), as llama.cpp's
// convert_hf_to_gguf.py BitnetModel writes it. LlamaForCausalLM becomes `llama` without
// sub-norms, lm_head as an F16 output.weight and Q/K rows permuted for NORM RoPE exactly as
// convert_hf_to_gguf.py LlamaModel.permute does (PermuteQKNorm). Embeddings are F16, norms
// F32, general.name the directory's base
// name, the full tokenizer metadata (model, pre-tokenizer, tokens, token types, merges, special
// ids, add_bos_token) and tokenizer.chat_template when tokenizer_config.json has one.
//
// Projections are absmean-quantized as OpenHF does (one scale per tensor) and encoded as typ:
// TypeI2_S keeps the f32 per-tensor scale; TypeTQ2_0 and TypeTQ1_0 store that scale, rounded to
// f16, in every 256-weight block, and need every projection's input width to be a multiple of
// 256 so no block straddles two rows. The GGUF's tensors are held in memory, not aliased to dir.
//
// Nothing non-finite is written: a NaN or Inf in the checkpoint, or a value that becomes Inf in
// F16 (the embedding, TQ block scales), is an error naming the tensor and the element or block
// (OpenHF, CheckFinite). A max_position_embeddings above MaxContextLength is refused rather than
// clamped, so the GGUF never claims a context the checkpoint did not declare.
func HFToGGUF(dir string, typ TensorType) (*GGUF, error) { return hfToGGUF(dir, typ, nil) }

// hfToGGUF is HFToGGUF reporting the tensors converted ("converting") and, for TQ types,
// re-encoded ("encoding") through progress (nil: no reports).
func hfToGGUF(dir string, typ TensorType, progress ProgressFunc) (*GGUF, error) {
	if typ != TypeI2_S && typ != TypeTQ2_0 && typ != TypeTQ1_0 {
		return nil, fmt.Errorf("convert: tensor type %v is not a ternary type (want I2_S, TQ2_0 or TQ1_0)", typ)
	}
	hc, err := ReadHFConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	if hc.MaxPositionEmbeddings > MaxContextLength {
		return nil, fmt.Errorf("%s: config.json: max_position_embeddings = %d: above the %d tokens convert writes as context_length (no backend could hold such a KV cache); fix config.json",
			dir, hc.MaxPositionEmbeddings, MaxContextLength)
	}
	m, err := openHF(dir, progress)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	withMeta, ok := m.Tokenizer.(interface {
		Metadata() (map[string]any, error)
	})
	if !ok {
		return nil, fmt.Errorf("%s: tokenizer %T cannot be written to GGUF", dir, m.Tokenizer)
	}
	tokMeta, err := withMeta.Metadata()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, HFTokenizerFile), err)
	}
	if m.Config.ChatTemplate != "" {
		tokMeta[KeyChatTemplate] = m.Config.ChatTemplate
	}
	tokKeys := orderedKeys(tokMeta, tokenizerKeyOrder)
	if typ != TypeI2_S {
		done := &tensorProgress{fn: progress, stage: "encoding"}
		for _, s := range m.Config.TensorSpecs() {
			if s.Kind == KindWeight {
				done.total++
			}
		}
		for _, s := range m.Config.TensorSpecs() {
			if s.Kind != KindWeight {
				continue
			}
			t, err := reencodeTernary(m.Tensors[s.Name], typ)
			if err == nil {
				err = checkTensorFinite(t) // a scale beyond f16's range becomes Inf
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", dir, err)
			}
			m.Tensors[s.Name] = t
			done.add()
		}
	}
	g, err := ModelToGGUF(m, tokKeys, tokMeta)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	// general.name goes right after general.architecture, as llama.cpp writes it.
	name := filepath.Base(filepath.Clean(dir))
	g.Keys = append(g.Keys[:1], append([]string{"general.name"}, g.Keys[1:]...)...)
	g.Meta["general.name"] = name
	return g, nil
}

// ConvertHF converts the Hugging Face checkpoint directory dir to the GGUF file out with
// projections encoded as typ (HFToGGUF). The file is written through a temporary file in out's
// directory that is renamed into place only when complete, so a failed conversion leaves no
// partial file and never clobbers an existing out.
func ConvertHF(dir, out string, typ TensorType) error { return ConvertHFProgress(dir, out, typ, nil) }

// ConvertHFProgress is ConvertHF reporting its progress through progress (nil: none): the
// tensors converted from the checkpoint (stage "converting"), for TQ types the projections
// re-encoded ("encoding"), then the bytes of out written ("writing"). The file is the same.
func ConvertHFProgress(dir, out string, typ TensorType, progress ProgressFunc) error {
	g, err := hfToGGUF(dir, typ, progress)
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(out, withProgress(progress, func(w io.Writer, setTotal func(int64)) error {
		return writeGGUF(w, g, setTotal)
	})); err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	return nil
}

// reencodeTernary turns an I2_S projection (one per-tensor scale) into TQ2_0 or TQ1_0 with that
// scale in every block. The input width (Shape[0]) must be a multiple of 256.
func reencodeTernary(t *Tensor, typ TensorType) (*Tensor, error) {
	if t == nil || t.Type != TypeI2_S || len(t.Shape) != 2 {
		return nil, fmt.Errorf("convert: tensor %v: want a 2-D I2_S projection", t)
	}
	cols, n := t.Shape[0], t.Elements()
	if cols%256 != 0 {
		return nil, fmt.Errorf("tensor %s: input width %d is not a multiple of 256, which %v blocks need", t.Name, cols, typ)
	}
	trits, scale, err := DecodeI2S(t.Data, int(n))
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	scales := make([]float32, n/256)
	for i := range scales {
		scales[i] = scale
	}
	var data []byte
	if typ == TypeTQ2_0 {
		data, err = EncodeTQ2_0(trits, scales)
	} else {
		data, err = EncodeTQ1_0(trits, scales)
	}
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	return &Tensor{Name: t.Name, Type: typ, Shape: append([]uint64(nil), t.Shape...), Data: data}, nil
}

// orderedKeys returns the keys of meta: first those of order that meta has, then the rest sorted.
func orderedKeys(meta map[string]any, order []string) []string {
	var keys []string
	seen := map[string]bool{}
	for _, k := range order {
		if _, ok := meta[k]; ok {
			keys = append(keys, k)
			seen[k] = true
		}
	}
	var rest []string
	for k := range meta {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	return append(keys, rest...)
}
