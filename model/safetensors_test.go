package model

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
)

// stEntry is one tensor for buildST.
type stEntry struct {
	name  string
	dtype string
	shape []uint64
	data  []byte
}

// buildST lays out a safetensors file by hand (huggingface/safetensors format): 8-byte header
// length, JSON header, data in entry order.
func buildST(entries []stEntry) []byte {
	hdr := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var data []byte
	for _, e := range entries {
		hdr[e.name] = map[string]any{"dtype": e.dtype, "shape": e.shape, "data_offsets": []int{len(data), len(data) + len(e.data)}}
		data = append(data, e.data...)
	}
	h, _ := json.Marshal(hdr)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	out = append(out, h...)
	return append(out, data...)
}

// bf16Bytes encodes values that are exactly representable in bf16 (their low 16 bits are 0).
func bf16Bytes(x []float32) []byte {
	out := make([]byte, 2*len(x))
	for i, v := range x {
		b := math.Float32bits(v)
		if b&0xffff != 0 {
			panic(fmt.Sprintf("%g is not a bf16 value", v))
		}
		binary.LittleEndian.PutUint16(out[2*i:], uint16(b>>16))
	}
	return out
}

func TestParseSafetensors(t *testing.T) {
	data := buildST([]stEntry{
		{"a", "F32", []uint64{2}, []byte{0, 0, 128, 63, 0, 0, 0, 64}},
		{"b", "U8", []uint64{1, 3}, []byte{7, 8, 9}},
		{"s", "BF16", []uint64{}, []byte{0x80, 0x3f}},
	})
	s, err := ParseSafetensors("m.safetensors", data)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"format": "pt"}, s.Metadata)
	require.Len(t, s.Tensors, 3)
	require.Equal(t, &SafetensorsTensor{Name: "b", DType: "U8", Shape: []uint64{1, 3}, Data: []byte{7, 8, 9}}, s.Tensors["b"])
	f, err := s.Tensors["a"].floats("m")
	require.NoError(t, err)
	require.Equal(t, []float32{1, 2}, f)
	f, err = s.Tensors["s"].floats("m")
	require.NoError(t, err)
	require.Equal(t, []float32{1}, f)
}

func TestParseSafetensorsErrors(t *testing.T) {
	withHeader := func(h string, data ...byte) []byte {
		out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
		return append(append(out, h...), data...)
	}
	for _, c := range []struct {
		name string
		data []byte
		msg  []string
	}{
		{"short", []byte{1, 2, 3}, []string{"truncated", "byte 0"}},
		{"hdrlen", binary.LittleEndian.AppendUint64(nil, 50), []string{"header of 50 bytes at byte 8", "only 0 bytes left"}},
		{"hdrlimit", binary.LittleEndian.AppendUint64(nil, 1<<40), []string{"exceeds the 100000000-byte limit"}},
		{"json", withHeader(`{"a": `), []string{"safetensors header (bytes 8..14)"}},
		{"dtype", withHeader(`{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}`, 0), []string{`tensor "a"`, `unknown dtype "Q4"`}},
		{"offsets", withHeader(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,0]}}`, 0), []string{`tensor "a"`, "data_offsets [1 0]"}},
		{"pastend", withHeader(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`, 0, 0), []string{`tensor "a"`, "run past the end", "bytes 61..65"}},
		{"size", withHeader(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 0, 0, 0, 0), []string{`tensor "a"`, "F32 [2] needs 8 bytes", "give 4"}},
		{"negshape", withHeader(`{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}`), []string{`tensor "a"`}},
		{"bigshape", withHeader(`{"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}}`), []string{`tensor "a"`, "larger than the file"}},
		{"overlap", withHeader(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}`, 0, 0, 0),
			[]string{`tensors "a" and "b" overlap`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSafetensors("bad.safetensors", c.data)
			require.Error(t, err)
			require.Contains(t, err.Error(), "bad.safetensors")
			for _, m := range c.msg {
				require.Contains(t, err.Error(), m)
			}
		})
	}
}

func FuzzParseSafetensors(f *testing.F) {
	f.Add(buildST([]stEntry{{"a", "F32", []uint64{2}, make([]byte, 8)}, {"b", "BF16", []uint64{1, 1}, make([]byte, 2)}}))
	f.Add(buildST(nil))
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSafetensors("fuzz", data)
		if err != nil {
			return
		}
		for _, tt := range s.Tensors {
			n := uint64(1)
			for _, d := range tt.Shape {
				n *= d
			}
			require.Equal(t, n*safetensorsDTypeSize[tt.DType], uint64(len(tt.Data)))
		}
	})
}

// hfTestModel is a tiny BitNetForCausalLM checkpoint: its hyper-parameters and the trits and
// scales the test chose for every projection (by GGUF name), row-major [rows, cols].
type hfTestModel struct {
	vocab, dim, layers, heads, kv, ffn int
	trits                              map[string][]int8
	scales                             map[string]float32
	norms                              map[string][]float32
	embd                               []float32
}

// writeHFTestModel writes config.json, model.safetensors, tokenizer.json and tokenizer_config.json
// for a model whose projections are stored either as bf16 latent weights (packed=false) or as
// transformers' packed uint8 with weight_scale (packed=true).
func writeHFTestModel(t *testing.T, dir string, packed bool) *hfTestModel {
	m := &hfTestModel{vocab: 300, dim: 128, layers: 2, heads: 4, kv: 2, ffn: 256,
		trits: map[string][]int8{}, scales: map[string]float32{}, norms: map[string][]float32{}}
	r := rand.New(rand.NewPCG(1, 2))
	cfg := map[string]any{
		"architectures": []string{"BitNetForCausalLM"}, "model_type": "bitnet",
		"hidden_size": m.dim, "intermediate_size": m.ffn, "num_hidden_layers": m.layers,
		"num_attention_heads": m.heads, "num_key_value_heads": m.kv, "rms_norm_eps": 1e-5,
		"rope_theta": 500000.0, "max_position_embeddings": 64, "vocab_size": m.vocab,
		"hidden_act": "relu2", "tie_word_embeddings": true, "bos_token_id": 297, "eos_token_id": 298,
		"torch_dtype": "bfloat16",
	}
	b, _ := json.Marshal(cfg)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644))

	var entries []stEntry
	// Embedding [vocab, dim]: multiples of 1/256 in (-0.5, 0.5), exact in bf16 and f16.
	m.embd = make([]float32, m.vocab*m.dim)
	for i := range m.embd {
		m.embd[i] = float32(r.IntN(255)-127) / 256
	}
	entries = append(entries, stEntry{"model.embed_tokens.weight", "BF16", []uint64{uint64(m.vocab), uint64(m.dim)}, bf16Bytes(m.embd)})
	norm := func(hf, gguf string, n int) {
		w := make([]float32, n)
		for i := range w {
			w[i] = 1 + float32(r.IntN(33)-16)/64
		}
		m.norms[gguf] = w
		entries = append(entries, stEntry{hf, "BF16", []uint64{uint64(n)}, bf16Bytes(w)})
	}
	norm("model.norm.weight", "output_norm.weight", m.dim)
	hd := m.dim / m.heads
	for l := 0; l < m.layers; l++ {
		p, g := fmt.Sprintf("model.layers.%d.", l), fmt.Sprintf("blk.%d.", l)
		norm(p+"input_layernorm.weight", g+"attn_norm.weight", m.dim)
		norm(p+"post_attention_layernorm.weight", g+"ffn_norm.weight", m.dim)
		norm(p+"self_attn.attn_sub_norm.weight", g+"attn_sub_norm.weight", m.dim)
		norm(p+"mlp.ffn_sub_norm.weight", g+"ffn_sub_norm.weight", m.ffn)
		for _, w := range []struct {
			hf, gguf   string
			rows, cols int
		}{
			{"self_attn.q_proj", "attn_q", m.dim, m.dim}, {"self_attn.k_proj", "attn_k", m.kv * hd, m.dim},
			{"self_attn.v_proj", "attn_v", m.kv * hd, m.dim}, {"self_attn.o_proj", "attn_output", m.dim, m.dim},
			{"mlp.gate_proj", "ffn_gate", m.ffn, m.dim}, {"mlp.up_proj", "ffn_up", m.ffn, m.dim},
			{"mlp.down_proj", "ffn_down", m.dim, m.ffn},
		} {
			n := w.rows * w.cols
			trits := make([]int8, n)
			for i := range trits {
				trits[i] = int8(r.IntN(3)) - 1
			}
			name := g + w.gguf + ".weight"
			m.trits[name] = trits
			// Latent: W = trit * s with s a power of two, so mean|W| = s * nonzeros / n, and W /
			// mean|W| = ±n/nonzeros, which rounds back to ±1 when at least half are nonzero.
			s := float32(math.Ldexp(1, -3-r.IntN(4)))
			if !packed {
				nz := 0
				lat := make([]float32, n)
				for i, v := range trits {
					lat[i] = float32(v) * s
					if v != 0 {
						nz++
					}
				}
				require.Greater(t, 2*nz, n)
				m.scales[name] = float32(float64(s) * float64(nz) / float64(n))
				entries = append(entries, stEntry{p + w.hf + ".weight", "BF16", []uint64{uint64(w.rows), uint64(w.cols)}, bf16Bytes(lat)})
				continue
			}
			// Packed: byte (i, c) of [rows/4, cols] holds rows k*rows/4 + i at bits 2k.
			q := w.rows / 4
			pk := make([]byte, q*w.cols)
			for i := 0; i < q; i++ {
				for c := 0; c < w.cols; c++ {
					for k := 0; k < 4; k++ {
						pk[i*w.cols+c] |= byte(trits[(k*q+i)*w.cols+c]+1) << (2 * k)
					}
				}
			}
			entries = append(entries, stEntry{p + w.hf + ".weight", "U8", []uint64{uint64(q), uint64(w.cols)}, pk})
			// weight_scale is the inverse of the dequantization scale.
			if l == 0 {
				m.scales[name] = s
				entries = append(entries, stEntry{p + w.hf + ".weight_scale", "BF16", []uint64{1}, bf16Bytes([]float32{1 / s})})
			} else {
				m.scales[name] = 1 / float32(7)
				entries = append(entries, stEntry{p + w.hf + ".weight_scale", "F32", []uint64{1}, binary.LittleEndian.AppendUint32(nil, math.Float32bits(7))})
			}
		}
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "model.safetensors"), buildST(entries), 0o644))
	writeHFTokenizer(t, dir, m.vocab)
	return m
}

// writeHFTokenizer writes tokenizer.json / tokenizer_config.json holding the synthetic vocabulary
// (SynthTokenizerMetadata) in HF tokenizers' format with the LLaMA-3 pre-tokenizer.
func writeHFTokenizer(t *testing.T, dir string, vocab int) {
	_, meta, err := SynthTokenizerMetadata(vocab)
	require.NoError(t, err)
	toks := meta[KeyTokenizerTokens].([]string)
	v := map[string]int{}
	for i, s := range toks[:vocab-3] {
		v[s] = i
	}
	var added []map[string]any
	for i := vocab - 3; i < vocab; i++ {
		added = append(added, map[string]any{"id": i, "content": toks[i], "special": true})
	}
	tj := map[string]any{
		"added_tokens": added,
		"normalizer":   nil,
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": PatternLlama3}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
		}},
		"post_processor": nil,
		"model":          map[string]any{"type": "BPE", "vocab": v, "merges": meta[KeyTokenizerMerges], "ignore_merges": true},
	}
	b, _ := json.Marshal(tj)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), b, 0o644))
	tc := map[string]any{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "add_bos_token": true,
		"chat_template": SynthChatTemplate}
	b, _ = json.Marshal(tc)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), b, 0o644))
}

// checkHFModel compares an opened model with what the test wrote.
func checkHFModel(t *testing.T, m *Model, want *hfTestModel) {
	c := m.Config
	require.Equal(t, Config{
		Arch: ArchBitNetB158, VocabSize: 300, Dim: 128, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 32, FFNDim: 256,
		RoPEBase: 500000, RoPEDim: 32, RoPEMode: RoPENeox, RMSEps: 1e-5, ContextLength: 64, Act: ActReLU2,
		TiedEmbedding: true, SubNorms: true, BOS: 297, EOS: 298, EOT: 299, AddBOS: true, ChatTemplate: SynthChatTemplate,
	}, c)
	require.Len(t, m.Tensors, 2+2*11)
	for name, trits := range want.trits {
		tt := m.Tensors[name]
		require.NotNil(t, tt, name)
		require.Equal(t, TypeI2_S, tt.Type, name)
		got, scale, err := DecodeI2S(tt.Data, len(trits))
		require.NoError(t, err)
		require.Equal(t, trits, got, name)
		require.Equal(t, want.scales[name], scale, name)
	}
	for name, w := range want.norms {
		tt := m.Tensors[name]
		require.Equal(t, TypeF32, tt.Type, name)
		require.Equal(t, []uint64{uint64(len(w))}, tt.Shape, name)
		got := make([]float32, len(w))
		require.NoError(t, DecodeF32Row(tt.Data, got))
		require.Equal(t, w, got, name)
	}
	e := m.Tensors["token_embd.weight"]
	require.Equal(t, TypeF16, e.Type)
	require.Equal(t, []uint64{128, 300}, e.Shape)
	got := make([]float32, len(want.embd))
	require.NoError(t, DecodeF16Row(e.Data, got))
	require.Equal(t, want.embd, got)
	require.Equal(t, []uint64{128, 64}, m.Tensors["blk.1.attn_k.weight"].Shape)
	require.Equal(t, []uint64{256, 128}, m.Tensors["blk.0.ffn_down.weight"].Shape)
}

// TestHFSafetensorsMatchesGGUF loads a checkpoint the test wrote (bf16 latent and packed
// variants), checks every tensor against the values the test chose, writes the model to GGUF,
// reopens that, and requires identical tensors and config.
func TestHFSafetensorsMatchesGGUF(t *testing.T) {
	for _, packed := range []bool{false, true} {
		t.Run(fmt.Sprintf("packed=%v", packed), func(t *testing.T) {
			dir := t.TempDir()
			want := writeHFTestModel(t, dir, packed)
			m, err := Open(dir)
			require.NoError(t, err)
			defer m.Close()
			checkHFModel(t, m, want)
			ids := m.Tokenizer.Encode(" the world", false)
			require.Equal(t, []int{260, 294}, ids, "Ġthe is hand merge 4 (id 256+4), Ġworld hand merge 38 (id 256+38)")

			bpe, ok := m.Tokenizer.(*BPETokenizer)
			require.True(t, ok)
			tokMeta, err := bpe.Metadata()
			require.NoError(t, err)
			tokMeta[KeyChatTemplate] = m.Config.ChatTemplate
			var tokKeys []string
			for k := range tokMeta {
				tokKeys = append(tokKeys, k)
			}
			sort.Strings(tokKeys)
			g, err := ModelToGGUF(m, tokKeys, tokMeta)
			require.NoError(t, err)
			path := filepath.Join(t.TempDir(), "m.gguf")
			require.NoError(t, WriteGGUFFile(path, g))

			m2, err := Open(path)
			require.NoError(t, err)
			defer m2.Close()
			require.Equal(t, m.Config, m2.Config)
			require.Equal(t, len(m.Tensors), len(m2.Tensors))
			for name, a := range m.Tensors {
				b := m2.Tensors[name]
				require.NotNil(t, b, name)
				require.Equal(t, a.Type, b.Type, name)
				require.Equal(t, a.Shape, b.Shape, name)
				require.Equal(t, a.Data, b.Data, name)
			}
			checkHFModel(t, m2, want)
			// The .safetensors path opens the same directory.
			m3, err := Open(filepath.Join(dir, "model.safetensors"))
			require.NoError(t, err)
			require.Equal(t, m.Tensors["blk.1.ffn_up.weight"].Data, m3.Tensors["blk.1.ffn_up.weight"].Data)
		})
	}
}

func TestHFErrors(t *testing.T) {
	rewrite := func(t *testing.T, dir string, edit func(s *Safetensors) []stEntry) {
		p := filepath.Join(dir, "model.safetensors")
		s, err := OpenSafetensors(p)
		require.NoError(t, err)
		entries := edit(s)
		sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
		data := buildST(entries)
		require.NoError(t, s.Close())
		require.NoError(t, os.WriteFile(p, data, 0o644))
	}
	all := func(s *Safetensors, skip string) []stEntry {
		var out []stEntry
		for n, tt := range s.Tensors {
			if n != skip {
				out = append(out, stEntry{n, tt.DType, tt.Shape, append([]byte(nil), tt.Data...)})
			}
		}
		return out
	}
	for _, c := range []struct {
		name   string
		packed bool
		edit   func(s *Safetensors) []stEntry
		msg    []string
	}{
		{"missing", false, func(s *Safetensors) []stEntry { return all(s, "model.layers.1.mlp.up_proj.weight") },
			[]string{"tensor model.layers.1.mlp.up_proj.weight is missing", "blk.1.ffn_up.weight", "[256 128]"}},
		{"extra", false, func(s *Safetensors) []stEntry {
			return append(all(s, ""), stEntry{"model.layers.1.mlp.bias", "F32", []uint64{1}, make([]byte, 4)})
		}, []string{"tensor model.layers.1.mlp.bias", "model.safetensors", "not part of a BitNetForCausalLM model"}},
		{"shape", false, func(s *Safetensors) []stEntry {
			out := all(s, "model.norm.weight")
			return append(out, stEntry{"model.norm.weight", "BF16", []uint64{64}, make([]byte, 128)})
		}, []string{"model.safetensors", "tensor model.norm.weight: expected shape [128], found [64]"}},
		{"dtype", false, func(s *Safetensors) []stEntry {
			out := all(s, "model.norm.weight")
			return append(out, stEntry{"model.norm.weight", "I16", []uint64{128}, make([]byte, 256)})
		}, []string{"tensor model.norm.weight: dtype I16, want F32, F16 or BF16"}},
		{"no scale", true, func(s *Safetensors) []stEntry { return all(s, "model.layers.0.self_attn.k_proj.weight_scale") },
			[]string{"tensor model.layers.0.self_attn.k_proj.weight is packed but model.layers.0.self_attn.k_proj.weight_scale is missing"}},
		{"packed shape", true, func(s *Safetensors) []stEntry {
			out := all(s, "model.layers.0.mlp.down_proj.weight")
			return append(out, stEntry{"model.layers.0.mlp.down_proj.weight", "U8", []uint64{128, 256}, make([]byte, 128*256)})
		}, []string{"tensor model.layers.0.mlp.down_proj.weight: packed U8 weight: expected shape [32 256] for 128 rows, found [128 256]"}},
		{"code 3", true, func(s *Safetensors) []stEntry {
			out := all(s, "")
			for i := range out {
				if out[i].name == "model.layers.1.self_attn.q_proj.weight" {
					out[i].data[5] = 0xff
				}
			}
			return out
		}, []string{"tensor model.layers.1.self_attn.q_proj.weight: packed byte 5 (row 0, column 5) holds code 3"}},
		{"zero scale", true, func(s *Safetensors) []stEntry {
			out := all(s, "model.layers.1.self_attn.q_proj.weight_scale")
			return append(out, stEntry{"model.layers.1.self_attn.q_proj.weight_scale", "F32", []uint64{1}, make([]byte, 4)})
		}, []string{"model.layers.1.self_attn.q_proj.weight_scale: want one positive finite value"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeHFTestModel(t, dir, c.packed)
			rewrite(t, dir, c.edit)
			_, err := Open(dir)
			require.Error(t, err)
			for _, m := range c.msg {
				require.Contains(t, err.Error(), m)
			}
		})
	}
}

func TestHFConfigErrors(t *testing.T) {
	base := func() HFConfig {
		tr := true
		return HFConfig{Architectures: []string{"BitNetForCausalLM"}, HiddenSize: 128, IntermediateSize: 256,
			NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2, MaxPositionEmbeddings: 64, VocabSize: 300,
			HiddenAct: "silu", TieWordEmbeddings: &tr, EOSTokenID: json.RawMessage(`[298, 299]`)}
	}
	h := base()
	c, err := h.Config()
	require.NoError(t, err)
	require.Equal(t, ArchBitNet, c.Arch)
	require.Equal(t, ActSiLU, c.Act)
	require.Equal(t, float32(1e-5), c.RMSEps)
	require.Equal(t, float32(10000), c.RoPEBase)
	require.Equal(t, -1, c.BOS)
	require.Equal(t, 298, c.EOS)
	for _, e := range []struct {
		edit func(h *HFConfig)
		msg  string
	}{
		{func(h *HFConfig) { h.Architectures = []string{"GPT2LMHeadModel"} }, `config.json: architectures = ["GPT2LMHeadModel"], want one of ["BitNetForCausalLM"], ["BitnetForCausalLM"], ["LlamaForCausalLM"]`},
		{func(h *HFConfig) { h.Architectures = []string{"LlamaForCausalLM"} }, `config.json: architectures = ["LlamaForCausalLM"] with quantization_config.quant_method absent: want "bitnet" (a LlamaForCausalLM without it is a full-precision model, not a ternary one)`},
		{func(h *HFConfig) {
			h.Architectures, h.QuantizationConfig = []string{"LlamaForCausalLM"}, &HFQuantizationConfig{QuantMethod: "gptq"}
		}, `config.json: architectures = ["LlamaForCausalLM"] with quantization_config.quant_method "gptq": want "bitnet" (a LlamaForCausalLM without it is a full-precision model, not a ternary one)`},
		{func(h *HFConfig) {
			h.Architectures, h.QuantizationConfig, h.HiddenAct = []string{"LlamaForCausalLM"}, &HFQuantizationConfig{QuantMethod: "bitnet"}, "relu2"
		}, `config.json: hidden_act = "relu2", want "silu" for LlamaForCausalLM`},
		{func(h *HFConfig) { h.Architectures, h.HiddenAct = []string{"BitnetForCausalLM"}, "gelu" }, `config.json: hidden_act = "gelu", want "silu" for BitnetForCausalLM`},
		{func(h *HFConfig) { h.MLPBias = true }, "config.json: mlp_bias = true: projections with a bias are not supported"},
		{func(h *HFConfig) { h.HiddenAct = "gelu" }, `config.json: hidden_act = "gelu", want "relu2" or "silu"`},
		{func(h *HFConfig) { h.NumHiddenLayers = 0 }, "config.json: num_hidden_layers = 0, want a positive integer"},
		{func(h *HFConfig) { h.NumKeyValueHeads = 3 }, "config.json: num_key_value_heads = 3 must divide num_attention_heads = 4"},
		{func(h *HFConfig) { h.HeadDim = 64 }, "config.json: head_dim = 64, expected hidden_size/num_attention_heads = 32"},
		{func(h *HFConfig) { h.RopeScaling = json.RawMessage(`{"type":"linear"}`) }, `config.json: rope_scaling = {"type":"linear"} is not supported`},
		{func(h *HFConfig) { h.BOSTokenID = json.RawMessage(`300`) }, "config.json: bos_token_id = 300 is outside the vocabulary of 300 tokens"},
		{func(h *HFConfig) { h.EOSTokenID = json.RawMessage(`"x"`) }, `config.json: eos_token_id = "x", want an integer or a list of integers`},
	} {
		h := base()
		e.edit(&h)
		_, err := h.Config()
		require.EqualError(t, err, e.msg)
	}
}

func TestHFName(t *testing.T) {
	for gguf, hf := range map[string]string{
		"token_embd.weight":          "model.embed_tokens.weight",
		"output_norm.weight":         "model.norm.weight",
		"output.weight":              "lm_head.weight",
		"blk.12.attn_q.weight":       "model.layers.12.self_attn.q_proj.weight",
		"blk.0.attn_output.weight":   "model.layers.0.self_attn.o_proj.weight",
		"blk.3.attn_norm.weight":     "model.layers.3.input_layernorm.weight",
		"blk.3.ffn_norm.weight":      "model.layers.3.post_attention_layernorm.weight",
		"blk.3.attn_sub_norm.weight": "model.layers.3.self_attn.attn_sub_norm.weight",
		"blk.3.ffn_sub_norm.weight":  "model.layers.3.mlp.ffn_sub_norm.weight",
		"blk.29.ffn_gate.weight":     "model.layers.29.mlp.gate_proj.weight",
		"blk.29.ffn_down.weight":     "model.layers.29.mlp.down_proj.weight",
		"blk.29.ffn_up.weight":       "model.layers.29.mlp.up_proj.weight",
		"blk.1.attn_k.weight":        "model.layers.1.self_attn.k_proj.weight",
		"blk.1.attn_v.weight":        "model.layers.1.self_attn.v_proj.weight",
	} {
		got, ok := HFName(gguf)
		require.True(t, ok, gguf)
		require.Equal(t, hf, got)
	}
	for _, bad := range []string{"blk.x.attn_q.weight", "blk.1.attn_q.scale", "blk.1.foo.weight", "rope_freqs.weight"} {
		_, ok := HFName(bad)
		require.False(t, ok, bad)
	}
}

// TestHFPackedScaleFollowsQuantizationConfig: a packed checkpoint's weight_scale multiplies under
// AutoBitLinear offline (the official microsoft/bitnet-b1.58-2B-4T config) and divides under
// BitLinear (linear_class "bitlinear" or absent), as transformers' integrations/bitnet.py does.
func TestHFPackedScaleFollowsQuantizationConfig(t *testing.T) {
	for _, c := range []struct {
		qc       map[string]any
		multiply bool
		rule     string
	}{
		{nil, false, "no quantization_config"},
		{map[string]any{"quant_method": "bitnet"}, false, "BitLinear"},
		{map[string]any{"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"}, false, "BitLinear"},
		{map[string]any{"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}, true, "AutoBitLinear"},
		{map[string]any{"quant_method": "bitnet", "linear_class": "autobitlinear"}, true, "AutoBitLinear"},
	} {
		dir := t.TempDir()
		want := writeHFTestModel(t, dir, true)
		setQuantizationConfig(t, dir, c.qc)
		m, err := Open(dir)
		require.NoError(t, err, "%v", c.qc)
		require.Contains(t, m.PackedScaleRule, c.rule)
		for name, trits := range want.trits {
			_, scale, err := DecodeI2S(m.Tensors[name].Data, len(trits))
			require.NoError(t, err)
			// want.scales holds 1/weight_scale (the BitLinear reading) rounded to f32.
			ws := 1 / want.scales[name]
			if name[:6] == "blk.1." {
				ws = 7 // written as exactly 7
			}
			if c.multiply {
				require.Equal(t, ws, scale, "%s %v", name, c.qc)
			} else {
				require.Equal(t, want.scales[name], scale, "%s %v", name, c.qc)
			}
		}
		m.Close()
	}
	for qc, msg := range map[string]string{
		`{"quant_method": "gptq"}`: `quantization_config.quant_method = "gptq", want "bitnet"`,
		`{"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}`: `"online" quantizes latent float weights`,
		`{"quant_method": "bitnet", "linear_class": "fancy"}`:                                        `quantization_config.linear_class = "fancy"`,
		`{"quant_method": "bitnet", "quantization_mode": "later"}`:                                   `quantization_config.quantization_mode = "later"`,
	} {
		dir := t.TempDir()
		writeHFTestModel(t, dir, true)
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(qc), &v))
		setQuantizationConfig(t, dir, v)
		_, err := Open(dir)
		require.ErrorContains(t, err, msg)
	}
}

// setQuantizationConfig rewrites dir/config.json with quantization_config = qc (nil: none).
func setQuantizationConfig(t *testing.T, dir string, qc map[string]any) {
	t.Helper()
	p := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, json.Unmarshal(b, &cfg))
	if qc == nil {
		delete(cfg, "quantization_config")
	} else {
		cfg["quantization_config"] = qc
	}
	b, err = json.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, b, 0o644))
}
