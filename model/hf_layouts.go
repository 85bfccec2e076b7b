package model

import (
	"fmt"
	"strings"
)

// HFLayout is the Hugging Face model class a checkpoint directory declares in config.json's
// `architectures` (one entry). It fixes the tensor names bitgpu looks for and how they map to
// GGUF (HFLayout.TensorName), and the GGUF architecture `convert` writes.
type HFLayout string

// The Hugging Face layouts OpenHF reads.
const (
	// HFBitNet is transformers' BitNetForCausalLM (models/bitnet/modeling_bitnet.py):
	// microsoft/bitnet-b1.58-2B-4T (packed) and -bf16 (latent). Sub-norms
	// self_attn.attn_sub_norm and mlp.ffn_sub_norm; hidden_act "relu2"; NEOX RoPE. GGUF arch
	// `bitnet-b1.58` (relu2) or `bitnet` (silu).
	HFBitNet HFLayout = "BitNetForCausalLM"
	// HFOneBit is 1bitLLM's remote-code BitnetForCausalLM (lower-case n;
	// 1bitLLM/bitnet_b1_58-{large,3B} modeling_bitnet.py: BitnetAttention.inner_attn_ln,
	// BitnetMLP.ffn_layernorm): fp16 latent weights ternarized with absmean at load
	// (weight_quant: scale = 1/mean|W|, round, clamp to [-1, 1]); hidden_act "silu"; untied
	// lm_head; NEOX RoPE. GGUF arch `bitnet`, whose sub-norms llama.cpp's gguf-py
	// tensor_mapping.py reads from exactly these names (ATTN_SUB_NORM
	// "model.layers.{bid}.self_attn.inner_attn_ln", FFN_SUB_NORM "model.layers.{bid}.mlp.ffn_layernorm").
	HFOneBit HFLayout = "BitnetForCausalLM"
	// HFLlama is transformers' LlamaForCausalLM with config.json quantization_config.quant_method
	// "bitnet" (transformers integrations/bitnet.py replaces every Linear but lm_head by BitLinear):
	// HF1BitLLM/Llama3-8B-1.58-100B-tokens, tiiuae/Falcon3-{1,3,7,10}B-Instruct-1.58bit and
	// tiiuae/Falcon-E-{1,3}B-* (packed uint8 + weight_scale, or bf16 latent weights absmean-ternarized
	// at load), no sub-norms, hidden_act "silu", a separate bf16 lm_head kept unquantized as
	// output.weight. GGUF arch `llama`: OpenHF permutes the Q and K rows for ggml's NORM RoPE as
	// llama.cpp's convert_hf_to_gguf.py LlamaModel.permute does (PermuteQKNorm) and the model runs
	// RoPENorm, so the directory and its GGUF hold the same rows and give the same bits.
	HFLlama HFLayout = "LlamaForCausalLM"
)

// HFLayouts lists the layouts OpenHF accepts, in the order error messages name them.
var HFLayouts = []HFLayout{HFBitNet, HFOneBit, HFLlama}

// Layout returns the checkpoint's layout from config.json's `architectures`, which must hold
// exactly one of HFLayouts; anything else is an error naming the key and listing the accepted
// values. LlamaForCausalLM also needs quantization_config.quant_method = "bitnet": a plain
// LLaMA checkpoint is a full-precision model, not a ternary one, and is refused naming the key.
func (h *HFConfig) Layout() (HFLayout, error) {
	var want []string
	for _, l := range HFLayouts {
		want = append(want, fmt.Sprintf("[%q]", string(l)))
	}
	if len(h.Architectures) == 1 {
		for _, l := range HFLayouts {
			if h.Architectures[0] != string(l) {
				continue
			}
			if l == HFLlama && (h.QuantizationConfig == nil || h.QuantizationConfig.QuantMethod != "bitnet") {
				method := "absent"
				if h.QuantizationConfig != nil {
					method = fmt.Sprintf("%q", h.QuantizationConfig.QuantMethod)
				}
				return "", fmt.Errorf("config.json: architectures = [\"LlamaForCausalLM\"] with quantization_config.quant_method %s: want \"bitnet\" (a LlamaForCausalLM without it is a full-precision model, not a ternary one)", method)
			}
			return l, nil
		}
	}
	return "", fmt.Errorf("config.json: architectures = %q, want one of %s", h.Architectures, strings.Join(want, ", "))
}

// TensorName returns the layout's Hugging Face tensor name for a GGUF tensor name, as HFName
// does for BitNetForCausalLM; BitnetForCausalLM (1bitLLM) names the sub-norms
// self_attn.inner_attn_ln and mlp.ffn_layernorm, and LlamaForCausalLM has none (ok false for
// attn_sub_norm and ffn_sub_norm). ok is false for names the layout does not have.
func (l HFLayout) TensorName(gguf string) (string, bool) {
	hf, ok := HFName(gguf)
	if !ok || l == HFBitNet {
		return hf, ok
	}
	for _, sub := range []struct{ bitnet, onebit string }{
		{".self_attn.attn_sub_norm.weight", ".self_attn.inner_attn_ln.weight"},
		{".mlp.ffn_sub_norm.weight", ".mlp.ffn_layernorm.weight"},
	} {
		if base, isSub := strings.CutSuffix(hf, sub.bitnet); isSub {
			if l == HFOneBit {
				return base + sub.onebit, true
			}
			return "", false
		}
	}
	return hf, true
}

// expectedLayer lists, for error messages, the tensor names a layer of the layout has under
// model.layers.N (with ".weight"; packed projections may add ".weight_scale").
func (l HFLayout) expectedLayer(c *Config) string {
	var names []string
	for _, s := range c.TensorSpecs() {
		if !strings.HasPrefix(s.Name, "blk.0.") {
			continue
		}
		hf, _ := l.TensorName(s.Name)
		names = append(names, strings.TrimPrefix(hf, "model.layers.0.")+" "+fmt.Sprint(reverse(s.Shape)))
	}
	return strings.Join(names, ", ")
}

// PermuteQKNorm reorders the rows of a [rows, cols] row-major projection (rows = heads·headDim
// outputs) from Hugging Face order, where RoPE rotates the pairs (j, j+headDim/2) of each head
// (NEOX), to ggml's NORM order, where it rotates adjacent pairs (2j, 2j+1) — llama.cpp's
// convert_hf_to_gguf.py LlamaModel.permute: w.reshape(heads, 2, headDim/2, cols).swapaxes(1, 2),
// so new row h·headDim + 2j + s is old row h·headDim + s·headDim/2 + j. Use the query heads for
// q_proj and the KV heads for k_proj (permute(w, n_head, n_head_kv) uses n_head_kv when they
// differ). The result is a new slice; rows must be a multiple of 2·heads.
func PermuteQKNorm[T any](w []T, rows, cols, heads int) ([]T, error) {
	if heads <= 0 || rows%(2*heads) != 0 || len(w) != rows*cols {
		return nil, fmt.Errorf("permute: %d elements as [%d, %d] with %d heads: want rows a multiple of 2·heads and rows·cols elements", len(w), rows, cols, heads)
	}
	hd := rows / heads
	out := make([]T, len(w))
	for h := 0; h < heads; h++ {
		for j := 0; j < hd/2; j++ {
			for s := 0; s < 2; s++ {
				dst := (h*hd + 2*j + s) * cols
				src := (h*hd + s*hd/2 + j) * cols
				copy(out[dst:dst+cols], w[src:src+cols])
			}
		}
	}
	return out, nil
}
