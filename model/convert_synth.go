package model

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
)

// WriteSyntheticHF writes a random-weight BitNet b1.58 checkpoint directory laid out as Hugging
// Face ships microsoft/bitnet-b1.58-2B-4T-bf16, for testing the HF path and ConvertHF without a
// trained model: config.json (BitNetForCausalLM, hidden_act relu2, tied embedding),
// model.safetensors with bf16 latent weights under the transformers names (HFName),
// tokenizer.json (the vocabulary of SynthTokenizerMetadata as an HF BPE model with the LLaMA-3
// Split pre-tokenizer and ignore_merges) and tokenizer_config.json (BOS/EOS, add_bos_token,
// SynthChatTemplate). The shapes come from opt as SynthOptions.Config fills them (opt.Type is not
// used: latent weights are bf16). Latent projection weights are uniform in (-0.1, 0.1), norms
// near 1, the embedding in (-0.5, 0.5), all deterministic from opt.Seed. dir must exist; the
// files are written atomically. opt.Family picks the layout as WriteSyntheticHFLayout does.
func WriteSyntheticHF(dir string, opt SynthOptions) error {
	return WriteSyntheticHFLayout(dir, opt, false)
}

// WriteSyntheticHFLayout writes a random-weight checkpoint directory in the Hugging Face layout
// of opt.Family (SynthFamilies), with the config.json keys, tensor names, dtypes and packing of
// the family's published checkpoints, and the tokenizer files of WriteSyntheticHF:
//
//   - "2b4t": BitNetForCausalLM as microsoft/bitnet-b1.58-2B-4T-bf16 ships it (bf16 latent
//     weights, hidden_act "relu2", tied embedding, sub-norms self_attn.attn_sub_norm and
//     mlp.ffn_sub_norm); packed: as microsoft/bitnet-b1.58-2B-4T, uint8 [rows/4, cols] + a bf16
//     weight_scale = mean|W| that multiplies (quantization_config linear_class "autobitlinear",
//     quantization_mode "offline").
//   - "onebit": 1bitLLM/bitnet_b1_58-* (architectures ["BitnetForCausalLM"], model_type "llama",
//     hidden_act "silu", torch_dtype "float16", input_bits 8, weight_bits 1): fp16 latent
//     weights, sub-norms self_attn.inner_attn_ln and mlp.ffn_layernorm, untied lm_head. 1bitLLM
//     ships no packed form, so packed is an error.
//   - "llama158": LlamaForCausalLM with quantization_config {"quant_method": "bitnet",
//     "modules_to_not_convert": null} as HF1BitLLM/Llama3-8B-1.58-100B-tokens and
//     Falcon3-*-1.58bit ship it: no sub-norms, hidden_act "silu", a bf16 lm_head; packed: uint8
//     [rows/4, cols] + a bf16 weight_scale = 1/mean|W| that divides (transformers BitLinear),
//     otherwise bf16 latent weights.
//
// Packed projections hold the absmean trits of the latent weights the unpacked form would
// have, byte (i, c) holding row k·rows/4 + i at bits 2k (transformers integrations/bitnet.py
// pack_weights); every projection's output count must then be a multiple of 4.
func WriteSyntheticHFLayout(dir string, opt SynthOptions, packed bool) error {
	opt.Type = TypeI2_S
	cfg, err := opt.Config()
	if err != nil {
		return err
	}
	layout, dtype := HFBitNet, "BF16"
	switch opt.Family {
	case "onebit":
		layout, dtype = HFOneBit, "F16"
		if packed {
			return fmt.Errorf("synth: family onebit: 1bitLLM checkpoints are fp16 latent weights; there is no packed form")
		}
	case "llama158":
		layout = HFLlama
	}
	encode := EncodeBF16
	if dtype == "F16" {
		encode = EncodeF16
	}
	r := rand.New(rand.NewPCG(opt.Seed, 0x6266))
	uniform := func(n int, lo, hi float64) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(lo + (hi-lo)*r.Float64())
		}
		return x
	}
	var entries []safetensorsEntry
	for _, s := range cfg.TensorSpecs() {
		hf, _ := layout.TensorName(s.Name)
		var x []float32
		n := int(s.Shape[0])
		if len(s.Shape) == 2 {
			n *= int(s.Shape[1])
		}
		switch s.Kind {
		case KindEmbedding:
			x = uniform(n, -0.5, 0.5)
		case KindNorm:
			x = uniform(n, 0.75, 1.25)
		default:
			x = uniform(n, -0.1, 0.1)
		}
		if !packed || s.Kind != KindWeight {
			entries = append(entries, safetensorsEntry{name: hf, dtype: dtype, shape: reverse(s.Shape), data: encode(x)})
			continue
		}
		rows, cols := int(s.Shape[1]), int(s.Shape[0])
		if rows%4 != 0 {
			return fmt.Errorf("synth: packed %s: %d output rows, want a multiple of 4", hf, rows)
		}
		if err := DecodeBF16Row(EncodeBF16(x), x); err != nil { // the latent form's bf16 values
			return err
		}
		trits, scale := QuantizeAbsmean(x)
		q := rows / 4
		pk := make([]byte, q*cols)
		for i := 0; i < q; i++ {
			for c := 0; c < cols; c++ {
				for k := 0; k < 4; k++ {
					pk[i*cols+c] |= byte(trits[(k*q+i)*cols+c]+1) << (2 * k)
				}
			}
		}
		ws := scale // AutoBitLinear (offline) multiplies by weight_scale
		if layout != HFBitNet {
			ws = 1 / scale // BitLinear divides by it
		}
		entries = append(entries,
			safetensorsEntry{name: hf, dtype: "U8", shape: []uint64{uint64(q), uint64(cols)}, data: pk},
			safetensorsEntry{name: strings.TrimSuffix(hf, ".weight") + ".weight_scale", dtype: "BF16", shape: []uint64{1}, data: EncodeBF16([]float32{ws})})
	}
	if err := writeSafetensorsBF16(filepath.Join(dir, "model.safetensors"), entries); err != nil {
		return err
	}

	hfCfg := map[string]any{
		"architectures": []string{"BitNetForCausalLM"}, "model_type": "bitnet",
		"vocab_size": cfg.VocabSize, "hidden_size": cfg.Dim, "intermediate_size": cfg.FFNDim,
		"num_hidden_layers": cfg.Layers, "num_attention_heads": cfg.Heads, "num_key_value_heads": cfg.KVHeads,
		"hidden_act": "relu2", "max_position_embeddings": cfg.ContextLength, "rms_norm_eps": cfg.RMSEps,
		"rope_theta": cfg.RoPEBase, "tie_word_embeddings": true, "bos_token_id": cfg.BOS,
		"eos_token_id": cfg.EOS, "torch_dtype": "bfloat16",
	}
	switch layout {
	case HFBitNet:
		if packed {
			hfCfg["quantization_config"] = map[string]any{"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}
		}
	case HFOneBit:
		for k, v := range map[string]any{"architectures": []string{string(HFOneBit)}, "model_type": "llama", "hidden_act": "silu",
			"tie_word_embeddings": false, "torch_dtype": "float16", "input_bits": 8, "weight_bits": 1, "rope_scaling": nil,
			"attention_bias": false, "pretraining_tp": 1} {
			hfCfg[k] = v
		}
	case HFLlama:
		for k, v := range map[string]any{"architectures": []string{string(HFLlama)}, "model_type": "llama", "hidden_act": "silu",
			"tie_word_embeddings": false, "rope_scaling": nil, "attention_bias": false, "mlp_bias": false,
			"head_dim": cfg.HeadDim, "quantization_config": map[string]any{"modules_to_not_convert": nil, "quant_method": "bitnet"}} {
			hfCfg[k] = v
		}
	}
	_, meta, err := SynthTokenizerMetadata(cfg.VocabSize)
	if err != nil {
		return err
	}
	tokens := meta[KeyTokenizerTokens].([]string)
	vocab := make(map[string]int, len(tokens))
	var added []map[string]any
	for i, tok := range tokens {
		if i >= cfg.VocabSize-3 {
			added = append(added, map[string]any{"id": i, "content": tok, "single_word": false, "lstrip": false,
				"rstrip": false, "normalized": false, "special": true})
			continue
		}
		vocab[tok] = i
	}
	var merges [][2]string
	for _, m := range meta[KeyTokenizerMerges].([]string) {
		a, b, _ := strings.Cut(m, " ")
		merges = append(merges, [2]string{a, b})
	}
	tj := map[string]any{
		"version": "1.0", "truncation": nil, "padding": nil,
		"added_tokens": added,
		"normalizer":   nil,
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": PatternLlama3}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
		}},
		"post_processor": map[string]any{"type": "TemplateProcessing",
			"single": []any{map[string]any{"SpecialToken": map[string]any{"id": synthBOS, "type_id": 0}},
				map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}}},
		"decoder": map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "fuse_unk": false,
			"byte_fallback": false, "ignore_merges": true, "vocab": vocab, "merges": merges},
	}
	tc := map[string]any{"bos_token": synthBOS, "eos_token": synthEOS, "add_bos_token": true,
		"chat_template": SynthChatTemplate, "tokenizer_class": "PreTrainedTokenizerFast"}
	for _, f := range []struct {
		name string
		v    any
	}{{"config.json", hfCfg}, {HFTokenizerFile, tj}, {HFTokenizerConfigFile, tc}} {
		b, err := json.MarshalIndent(f.v, "", "  ")
		if err != nil {
			return fmt.Errorf("%s: %v", f.name, err)
		}
		path := filepath.Join(dir, f.name)
		if err := WriteFileAtomic(path, func(w io.Writer) error { _, err := w.Write(append(b, '\n')); return err }); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}

// safetensorsEntry is one tensor for writeSafetensorsBF16: its name, dtype ("" is BF16),
// PyTorch shape and data.
type safetensorsEntry struct {
	name  string
	dtype string
	shape []uint64
	data  []byte
}

// writeSafetensorsBF16 writes entries as a safetensors file (8-byte little-endian header length,
// JSON header padded with spaces to a multiple of 8, tensor data in entry order).
func writeSafetensorsBF16(path string, entries []safetensorsEntry) error {
	hdr := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	off := 0
	for _, e := range entries {
		dt := e.dtype
		if dt == "" {
			dt = "BF16"
		}
		hdr[e.name] = map[string]any{"dtype": dt, "shape": e.shape, "data_offsets": []int{off, off + len(e.data)}}
		off += len(e.data)
	}
	h, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	err = WriteFileAtomic(path, func(w io.Writer) error {
		if _, err := w.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(h)))); err != nil {
			return err
		}
		if _, err := w.Write(h); err != nil {
			return err
		}
		for _, e := range entries {
			if _, err := w.Write(e.data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
