package model

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// testMeta returns GGUF metadata for arch with the given sizes, written out key by key.
func testMeta(arch string, vocab, dim, layers, heads, kv, ffn, ctx int) map[string]any {
	toks := make([]string, vocab)
	for i := range toks {
		toks[i] = fmt.Sprintf("t%d", i)
	}
	toks[vocab-1] = "<|eot_id|>"
	return map[string]any{
		"general.architecture":                       arch,
		arch + ".vocab_size":                         uint32(vocab),
		arch + ".context_length":                     uint32(ctx),
		arch + ".embedding_length":                   uint32(dim),
		arch + ".block_count":                        uint32(layers),
		arch + ".feed_forward_length":                uint32(ffn),
		arch + ".attention.head_count":               uint32(heads),
		arch + ".attention.head_count_kv":            uint32(kv),
		arch + ".rope.freq_base":                     float32(500000),
		arch + ".rope.dimension_count":               uint32(dim / heads),
		arch + ".attention.layer_norm_rms_epsilon":   float32(1e-6),
		"tokenizer.ggml.model":                       "gpt2",
		"tokenizer.ggml.pre":                         "llama-bpe",
		"tokenizer.ggml.tokens":                      toks,
		"tokenizer.ggml.bos_token_id":                uint32(0),
		"tokenizer.ggml.eos_token_id":                uint32(1),
		"tokenizer.chat_template":                    "{{ x }}",
		"tokenizer.ggml.add_bos_token":               true,
		arch + ".attention.key_length":               uint32(dim / heads),
		arch + ".attention.value_length":             uint32(dim / heads),
		"general.name":                               "test",
		"general.file_type":                          uint32(40),
		"tokenizer.ggml.padding_token_id":            uint32(1),
		"tokenizer.ggml.token_type_count_for_test":   uint32(0),
		"tokenizer.ggml.unused_key_should_be_ignore": "x",
	}
}

// testTensors returns the tensors (shapes only, no data) of a model with sub-norms; shapes are
// written in GGUF order [cols, rows] from the sizes given, not from TensorSpecs.
func testTensors(vocab, dim, layers, qdim, kvdim, ffn int, subNorms bool) map[string]*Tensor {
	m := map[string]*Tensor{}
	add := func(name string, typ TensorType, shape ...uint64) {
		m[name] = &Tensor{Name: name, Type: typ, Shape: shape}
	}
	d, v, q, kv, f := uint64(dim), uint64(vocab), uint64(qdim), uint64(kvdim), uint64(ffn)
	add("token_embd.weight", TypeF16, d, v)
	add("output_norm.weight", TypeF32, d)
	for l := 0; l < layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		add(p+"attn_norm.weight", TypeF32, d)
		add(p+"attn_q.weight", TypeI2_S, d, q)
		add(p+"attn_k.weight", TypeI2_S, d, kv)
		add(p+"attn_v.weight", TypeI2_S, d, kv)
		add(p+"attn_output.weight", TypeI2_S, q, d)
		add(p+"ffn_norm.weight", TypeF32, d)
		add(p+"ffn_gate.weight", TypeTQ2_0, d, f)
		add(p+"ffn_up.weight", TypeTQ1_0, d, f)
		add(p+"ffn_down.weight", TypeF16, f, d)
		if subNorms {
			add(p+"attn_sub_norm.weight", TypeF32, d)
			add(p+"ffn_sub_norm.weight", TypeF32, f)
		}
	}
	return m
}

func TestConfigFromGGUF2B4T(t *testing.T) {
	meta := testMeta("bitnet-b1.58", 128256, 2560, 30, 20, 5, 6912, 4096)
	delete(meta, "tokenizer.ggml.add_bos_token") // default for llama-bpe: true
	tensors := testTensors(128256, 2560, 30, 2560, 640, 6912, true)
	require.Len(t, tensors, 332)
	c, err := ConfigFromGGUF(meta, tensors)
	require.NoError(t, err)
	require.Equal(t, Config{
		Arch: ArchBitNetB158, VocabSize: 128256, Dim: 2560, Layers: 30, Heads: 20, KVHeads: 5, HeadDim: 128,
		FFNDim: 6912, RoPEBase: 500000, RoPEDim: 128, RoPEMode: RoPENeox, RMSEps: 1e-6, ContextLength: 4096,
		Act: ActReLU2, TiedEmbedding: true, SubNorms: true, BOS: 0, EOS: 1, EOT: 128255, AddBOS: true,
		ChatTemplate: "{{ x }}",
	}, c)
}

func TestConfigDefaults(t *testing.T) {
	meta := testMeta("bitnet", 300, 256, 2, 4, 2, 512, 128)
	for _, k := range []string{"bitnet.vocab_size", "bitnet.attention.head_count_kv", "bitnet.rope.freq_base",
		"bitnet.rope.dimension_count", "bitnet.attention.layer_norm_rms_epsilon", "tokenizer.ggml.add_bos_token",
		"tokenizer.ggml.pre", "tokenizer.chat_template", "tokenizer.ggml.bos_token_id"} {
		delete(meta, k)
	}
	tensors := testTensors(300, 256, 2, 256, 256, 512, true)
	tensors["output.weight"] = &Tensor{Name: "output.weight", Type: TypeQ8_0, Shape: []uint64{256, 300}}
	c, err := ConfigFromGGUF(meta, tensors)
	require.NoError(t, err)
	require.Equal(t, Config{
		Arch: ArchBitNet, VocabSize: 300, Dim: 256, Layers: 2, Heads: 4, KVHeads: 4, HeadDim: 64,
		FFNDim: 512, RoPEBase: 10000, RoPEDim: 64, RoPEMode: RoPENeox, RMSEps: 1e-5, ContextLength: 128,
		Act: ActSiLU, TiedEmbedding: false, SubNorms: true, BOS: -1, EOS: 1, EOT: 299, AddBOS: false,
	}, c)
}

func TestConfigLlamaArch(t *testing.T) {
	meta := testMeta("llama", 300, 256, 1, 4, 2, 512, 128)
	c, err := ConfigFromGGUF(meta, testTensors(300, 256, 1, 256, 128, 512, false))
	require.NoError(t, err)
	require.Equal(t, RoPENorm, c.RoPEMode)
	require.Equal(t, ActSiLU, c.Act)
	require.False(t, c.SubNorms)

	c, err = ConfigFromGGUF(meta, testTensors(300, 256, 1, 256, 128, 512, true))
	require.NoError(t, err)
	require.True(t, c.SubNorms)
}

func TestConfigBitNetScaleTensors(t *testing.T) {
	meta := testMeta("bitnet", 300, 256, 2, 4, 2, 512, 128)
	tensors := testTensors(300, 256, 2, 256, 128, 512, true)
	tensors["blk.1.attn_q.scale"] = &Tensor{Name: "blk.1.attn_q.scale", Type: TypeF32, Shape: []uint64{1}, Data: []byte{0, 0, 0, 64}}
	tensors["blk.0.ffn_down.scale"] = &Tensor{Name: "blk.0.ffn_down.scale", Type: TypeF32, Shape: []uint64{1}}
	c, err := ConfigFromGGUF(meta, tensors)
	require.NoError(t, err)
	m := &Model{Config: c, Tensors: tensors}
	require.Equal(t, float32(2), m.WeightScale("blk.1.attn_q.weight"))
	require.Equal(t, float32(1), m.WeightScale("blk.1.attn_k.weight"))

	tensors["blk.0.ffn_down.scale"].Shape = []uint64{2}
	_, err = ConfigFromGGUF(meta, tensors)
	require.EqualError(t, err, "tensor blk.0.ffn_down.scale: expected shape [1], found [2]")

	// The official architecture has no scale tensors.
	meta = testMeta("bitnet-b1.58", 300, 256, 2, 4, 2, 512, 128)
	delete(tensors, "blk.0.ffn_down.scale")
	_, err = ConfigFromGGUF(meta, tensors)
	require.EqualError(t, err, "tensor blk.1.attn_q.scale is not part of a bitnet-b1.58 model with 2 layers")
}

func TestConfigErrors(t *testing.T) {
	const a = "bitnet-b1.58"
	for _, c := range []struct {
		name   string
		edit   func(meta map[string]any, ts map[string]*Tensor)
		errMsg string
	}{
		{"arch missing", func(m map[string]any, _ map[string]*Tensor) { delete(m, "general.architecture") },
			"metadata key general.architecture is missing"},
		{"arch unknown", func(m map[string]any, _ map[string]*Tensor) { m["general.architecture"] = "gpt2" },
			`metadata key general.architecture = "gpt2": unsupported architecture (want bitnet-b1.58, bitnet-25, bitnet or llama)`},
		{"layers missing", func(m map[string]any, _ map[string]*Tensor) { delete(m, a+".block_count") },
			"metadata key bitnet-b1.58.block_count is missing"},
		{"ctx missing", func(m map[string]any, _ map[string]*Tensor) { delete(m, a+".context_length") },
			"metadata key bitnet-b1.58.context_length is missing"},
		{"dim type", func(m map[string]any, _ map[string]*Tensor) { m[a+".embedding_length"] = "256" },
			"metadata key bitnet-b1.58.embedding_length is string, want an integer"},
		{"dim zero", func(m map[string]any, _ map[string]*Tensor) { m[a+".embedding_length"] = int32(0) },
			"metadata key bitnet-b1.58.embedding_length = 0: expected a positive integer"},
		{"kv heads", func(m map[string]any, _ map[string]*Tensor) { m[a+".attention.head_count_kv"] = uint32(3) },
			"metadata key bitnet-b1.58.attention.head_count_kv = 3: must divide bitnet-b1.58.attention.head_count = 4"},
		{"heads", func(m map[string]any, _ map[string]*Tensor) { m[a+".attention.head_count"] = uint32(3) },
			"metadata key bitnet-b1.58.attention.head_count_kv = 2: must divide bitnet-b1.58.attention.head_count = 3"},
		{"key length", func(m map[string]any, _ map[string]*Tensor) { m[a+".attention.key_length"] = uint32(128) },
			"metadata key bitnet-b1.58.attention.key_length = 128: expected 64 (bitnet-b1.58.embedding_length / bitnet-b1.58.attention.head_count)"},
		{"rope dim", func(m map[string]any, _ map[string]*Tensor) { m[a+".rope.dimension_count"] = uint32(65) },
			"metadata key bitnet-b1.58.rope.dimension_count = 65: expected a positive even number at most the head size 64"},
		{"rope dim zero", func(m map[string]any, _ map[string]*Tensor) { m[a+".rope.dimension_count"] = uint32(0) },
			"metadata key bitnet-b1.58.rope.dimension_count = 0: expected a positive even number at most the head size 64"},
		{"layers huge", func(m map[string]any, _ map[string]*Tensor) { m[a+".block_count"] = uint32(1000000) },
			"metadata key bitnet-b1.58.block_count = 1000000: the file has only 24 tensors (a model with that many layers needs at least 7000000: 7 projections per layer)"},
		{"layers max", func(m map[string]any, _ map[string]*Tensor) { m[a+".block_count"] = uint32(1<<31 - 1) },
			"metadata key bitnet-b1.58.block_count = 2147483647: the file has only 24 tensors (a model with that many layers needs at least 15032385529: 7 projections per layer)"},
		{"dim huge", func(m map[string]any, _ map[string]*Tensor) {
			m[a+".embedding_length"] = uint32(1<<31 - 8)
			delete(m, a+".rope.dimension_count")
			delete(m, a+".attention.key_length")
			delete(m, a+".attention.value_length")
		}, "metadata key bitnet-b1.58.embedding_length = 2147483640: larger than the largest tensor in the file (131072 elements)"},
		{"ffn huge", func(m map[string]any, _ map[string]*Tensor) { m[a+".feed_forward_length"] = uint32(100000) },
			"metadata key bitnet-b1.58.embedding_length = 256 and metadata key bitnet-b1.58.feed_forward_length = 100000 imply 25600000-element feed-forward matrices; the largest tensor in the file has 131072 elements"},
		{"rope base type", func(m map[string]any, _ map[string]*Tensor) { m[a+".rope.freq_base"] = uint32(5) },
			"metadata key bitnet-b1.58.rope.freq_base is uint32, want a float"},
		{"vocab mismatch", func(m map[string]any, _ map[string]*Tensor) { m[a+".vocab_size"] = uint32(301) },
			"metadata key bitnet-b1.58.vocab_size = 301 but tokenizer.ggml.tokens has 300 tokens"},
		{"no vocab", func(m map[string]any, _ map[string]*Tensor) {
			delete(m, a+".vocab_size")
			delete(m, "tokenizer.ggml.tokens")
		}, "metadata keys bitnet-b1.58.vocab_size and tokenizer.ggml.tokens are both missing"},
		{"bos range", func(m map[string]any, _ map[string]*Tensor) { m["tokenizer.ggml.bos_token_id"] = uint32(300) },
			"metadata key tokenizer.ggml.bos_token_id = 300: outside the vocabulary of 300 tokens"},
		{"add bos type", func(m map[string]any, _ map[string]*Tensor) { m["tokenizer.ggml.add_bos_token"] = uint8(1) },
			"metadata key tokenizer.ggml.add_bos_token is uint8, want bool"},
		{"shape", func(_ map[string]any, ts map[string]*Tensor) { ts["blk.1.attn_k.weight"].Shape = []uint64{256, 256} },
			"tensor blk.1.attn_k.weight: expected shape [256 128], found [256 256]"},
		{"embd shape", func(_ map[string]any, ts map[string]*Tensor) { ts["token_embd.weight"].Shape = []uint64{300, 256} },
			"tensor token_embd.weight: expected shape [256 300], found [300 256]"},
		{"missing", func(_ map[string]any, ts map[string]*Tensor) { delete(ts, "blk.1.ffn_sub_norm.weight") },
			"tensor blk.1.ffn_sub_norm.weight is missing (expected shape [512])"},
		{"extra", func(_ map[string]any, ts map[string]*Tensor) {
			ts["blk.2.attn_q.weight"] = &Tensor{Name: "blk.2.attn_q.weight", Type: TypeI2_S, Shape: []uint64{256, 256}}
		}, "tensor blk.2.attn_q.weight is not part of a bitnet-b1.58 model with 2 layers"},
		{"norm type", func(_ map[string]any, ts map[string]*Tensor) { ts["output_norm.weight"].Type = TypeI2_S },
			"tensor output_norm.weight: type I2_S not allowed here (want F32, F16 or BF16)"},
		{"embd type", func(_ map[string]any, ts map[string]*Tensor) { ts["token_embd.weight"].Type = TypeTQ2_0 },
			"tensor token_embd.weight: type TQ2_0 not allowed here (want F32, F16, BF16, Q8_0, Q4_K or Q6_K)"},
		{"data size", func(_ map[string]any, ts map[string]*Tensor) { ts["output_norm.weight"].Data = make([]byte, 10) },
			"tensor output_norm.weight: F32 [256] needs 1024 bytes, found 10"},
	} {
		t.Run(c.name, func(t *testing.T) {
			meta := testMeta(a, 300, 256, 2, 4, 2, 512, 128)
			ts := testTensors(300, 256, 2, 256, 128, 512, true)
			c.edit(meta, ts)
			_, err := ConfigFromGGUF(meta, ts)
			require.EqualError(t, err, c.errMsg)
		})
	}
}

func TestConfigCheckAndMetadataRoundTrip(t *testing.T) {
	c := Config{Arch: ArchBitNetB158, VocabSize: 300, Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64,
		FFNDim: 512, RoPEBase: 500000, RoPEDim: 64, RMSEps: 1e-5, ContextLength: 128}
	require.NoError(t, c.Check())
	keys, meta := c.GGUFMetadata()
	require.Equal(t, []string{"general.architecture", "bitnet-b1.58.vocab_size", "bitnet-b1.58.context_length",
		"bitnet-b1.58.embedding_length", "bitnet-b1.58.block_count", "bitnet-b1.58.feed_forward_length",
		"bitnet-b1.58.rope.dimension_count", "bitnet-b1.58.attention.head_count", "bitnet-b1.58.attention.head_count_kv",
		"bitnet-b1.58.rope.freq_base", "bitnet-b1.58.attention.layer_norm_rms_epsilon"}, keys)
	require.Equal(t, uint32(2), meta["bitnet-b1.58.attention.head_count_kv"])
	require.Equal(t, float32(500000), meta["bitnet-b1.58.rope.freq_base"])
	back, err := ConfigFromGGUF(meta, nil)
	require.NoError(t, err)
	require.Equal(t, 256, back.Dim)
	require.Equal(t, 2, back.KVHeads)
	require.Equal(t, -1, back.BOS)

	bad := c
	bad.KVHeads = 3
	require.EqualError(t, bad.Check(), "config: heads 4 is not a multiple of kv heads 3")
}

// TestConfigArchLabels: the architecture labels converters write. bitnet-25 (microsoft/BitNet's
// converter) is bitnet-b1.58 with its own key prefix; bitnet's gate follows
// bitnet.hidden_activation, SiLU without it.
func TestConfigArchLabels(t *testing.T) {
	ts := testTensors(300, 256, 2, 256, 128, 512, true)
	c, err := ConfigFromGGUF(testMeta("bitnet-25", 300, 256, 2, 4, 2, 512, 128), ts)
	require.NoError(t, err)
	require.Equal(t, ArchBitNetB158, c.Arch)
	require.Equal(t, ActReLU2, c.Act)
	require.True(t, c.SubNorms)
	require.Equal(t, 2, c.Layers, "keys read with the bitnet-25. prefix")

	for act, want := range map[string]Activation{"relu2": ActReLU2, "silu": ActSiLU} {
		meta := testMeta("bitnet", 300, 256, 2, 4, 2, 512, 128)
		meta["bitnet.hidden_activation"] = act
		c, err = ConfigFromGGUF(meta, ts)
		require.NoError(t, err)
		require.Equal(t, want, c.Act, act)
	}
	meta := testMeta("bitnet", 300, 256, 2, 4, 2, 512, 128)
	meta["bitnet.hidden_activation"] = "gelu"
	_, err = ConfigFromGGUF(meta, ts)
	require.EqualError(t, err, `metadata key bitnet.hidden_activation = "gelu": unsupported gate activation (want "relu2" or "silu")`)
	meta["bitnet.hidden_activation"] = uint32(2)
	_, err = ConfigFromGGUF(meta, ts)
	require.ErrorContains(t, err, "bitnet.hidden_activation")
}
