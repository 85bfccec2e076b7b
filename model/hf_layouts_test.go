package model_test

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// hfLayoutCases are the Hugging Face layouts other than the 2B4T bf16 one (convert_test.go),
// each in a form its family publishes.
var hfLayoutCases = []struct {
	name, family string
	packed       bool
	arch         string
	subNorms     bool
}{
	{"1bitLLM-fp16", "onebit", false, "bitnet", true},
	{"llama-packed", "llama158", true, "llama", false},
	{"llama-latent", "llama158", false, "llama", false},
	{"2b4t-packed", "2b4t", true, "bitnet-b1.58", true},
}

// writeLayoutDir writes a synthetic checkpoint of the family (convertTestOptions' shapes).
func writeLayoutDir(t *testing.T, family string, packed bool) string {
	dir := filepath.Join(t.TempDir(), "tiny-"+family)
	require.NoError(t, os.Mkdir(dir, 0o755))
	opt := convertTestOptions
	opt.Family, opt.Ctx = family, 64
	require.NoError(t, model.WriteSyntheticHFLayout(dir, opt, packed))
	return dir
}

// prefillDecode prefills tokens on a fresh cpuref backend and then decodes the greedy next
// token steps times, returning every logit it saw (all prefill positions, then each step).
func prefillDecode(t *testing.T, m *model.Model, tokens []int, steps int) []float32 {
	b, err := cpuref.New(m, 0)
	require.NoError(t, err)
	defer b.Close()
	logits, err := b.Prefill(tokens, true)
	require.NoError(t, err)
	all := append([]float32(nil), logits...)
	last := logits[len(logits)-m.Config.VocabSize:]
	for range steps {
		next, err := b.Decode(cpuref.Argmax(last))
		require.NoError(t, err)
		all = append(all, next...)
		last = next
	}
	return all
}

// TestHFLayoutsConvertBitIdentical opens each layout's directory, converts it to GGUF (I2_S) and
// requires the arch and tensor names llama.cpp uses, the same Config, and bit-identical cpuref
// logits over a prefill and a few decode steps.
func TestHFLayoutsConvertBitIdentical(t *testing.T) {
	for _, c := range hfLayoutCases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeLayoutDir(t, c.family, c.packed)
			ref, err := model.Open(dir)
			require.NoError(t, err)
			defer ref.Close()
			require.Equal(t, model.Arch(c.arch), ref.Config.Arch)
			require.Equal(t, c.subNorms, ref.Config.SubNorms)
			require.Equal(t, c.family == "2b4t", ref.Config.TiedEmbedding)
			wantMode, wantAct := model.RoPENeox, model.ActSiLU
			if c.family == "llama158" {
				wantMode = model.RoPENorm
			}
			if c.family == "2b4t" {
				wantAct = model.ActReLU2
			}
			require.Equal(t, wantMode, ref.Config.RoPEMode)
			require.Equal(t, wantAct, ref.Config.Act)
			tokens := append([]int{ref.Config.BOS}, ref.Tokenizer.Encode(convertTestText, true)...)
			want := prefillDecode(t, ref, tokens, 3)

			out := filepath.Join(t.TempDir(), "tiny.gguf")
			require.NoError(t, model.ConvertHF(dir, out, model.TypeI2_S))
			g, err := model.OpenGGUF(out)
			require.NoError(t, err)
			require.Equal(t, c.arch, g.Meta["general.architecture"])
			require.Equal(t, c.subNorms, g.Tensor("blk.1.attn_sub_norm.weight") != nil)
			require.Equal(t, c.subNorms, g.Tensor("blk.1.ffn_sub_norm.weight") != nil)
			if c.family != "2b4t" {
				require.NotNil(t, g.Tensor("output.weight"), "lm_head becomes output.weight")
				require.Equal(t, model.TypeF16, g.Tensor("output.weight").Type)
			}
			require.Equal(t, model.TypeI2_S, g.Tensor("blk.0.attn_q.weight").Type)
			require.NoError(t, g.Close())

			m, err := model.Open(out)
			require.NoError(t, err)
			defer m.Close()
			require.Equal(t, ref.Config, m.Config)
			got := prefillDecode(t, m, tokens, 3)
			require.Equal(t, want, got, "HF directory and its GGUF must give the same bits")
		})
	}
}

// readLatentTrits returns the absmean trits and scale of an HF latent (bf16/f16) projection.
func readLatentTrits(t *testing.T, dir, name string) ([]int8, float32, []uint64) {
	st, err := model.OpenSafetensors(filepath.Join(dir, "model.safetensors"))
	require.NoError(t, err)
	defer st.Close()
	src := st.Tensors[name]
	require.NotNil(t, src, name)
	lat := make([]float32, len(src.Data)/2)
	switch src.DType {
	case "BF16":
		require.NoError(t, model.DecodeBF16Row(src.Data, lat))
	case "F16":
		require.NoError(t, model.DecodeF16Row(src.Data, lat))
	default:
		t.Fatalf("%s: dtype %s", name, src.DType)
	}
	trits, scale := model.QuantizeAbsmean(lat)
	return trits, scale, src.Shape
}

// llamaCppPermute is convert_hf_to_gguf.py's LlamaModel.permute written out as numpy would do
// it: view w [rows, cols] as [heads, 2, rows/heads/2, cols], swap axes 1 and 2, and read the
// result back in row-major order.
func llamaCppPermute(w []int8, rows, cols, heads int) []int8 {
	half := rows / heads / 2
	out := make([]int8, 0, len(w))
	for h := 0; h < heads; h++ { // result index order: (h, j, s, c)
		for j := 0; j < half; j++ {
			for s := 0; s < 2; s++ {
				for c := 0; c < cols; c++ {
					out = append(out, w[((h*2+s)*half+j)*cols+c])
				}
			}
		}
	}
	return out
}

// TestHFLlamaQKPermutation checks the llama layout's Q/K rows in the converted GGUF against
// llama.cpp's permutation of the safetensors rows (query heads for q_proj, KV heads for k_proj),
// and that the other projections keep HF order.
func TestHFLlamaQKPermutation(t *testing.T) {
	dir := writeLayoutDir(t, "llama158", false)
	out := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, model.ConvertHF(dir, out, model.TypeI2_S))
	m, err := model.Open(out)
	require.NoError(t, err)
	defer m.Close()
	c := m.Config
	require.NotEqual(t, c.Heads, c.KVHeads, "GQA, so using the wrong head count shows")
	for _, w := range []struct {
		gguf, hf string
		heads    int
	}{
		{"blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", c.Heads},
		{"blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight", c.KVHeads},
		{"blk.1.attn_v.weight", "model.layers.1.self_attn.v_proj.weight", 0},
	} {
		trits, scale, shape := readLatentTrits(t, dir, w.hf)
		want := trits
		if w.heads > 0 {
			want = llamaCppPermute(trits, int(shape[0]), int(shape[1]), w.heads)
			require.NotEqual(t, trits, want)
		}
		got, gotScale, err := model.DecodeI2S(m.Tensors[w.gguf].Data, len(trits))
		require.NoError(t, err)
		require.Equal(t, want, got, w.gguf)
		require.Equal(t, scale, gotScale, w.gguf)
	}
}

// TestHFOneBitQKOrder: 1bitLLM's layout is `bitnet` (NEOX RoPE), so its Q/K rows stay in Hugging
// Face order, fp16 latent weights absmean-ternarized.
func TestHFOneBitQKOrder(t *testing.T) {
	dir := writeLayoutDir(t, "onebit", false)
	m, err := model.Open(dir)
	require.NoError(t, err)
	defer m.Close()
	for gguf, hf := range map[string]string{"blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight", "blk.1.attn_k.weight": "model.layers.1.self_attn.k_proj.weight"} {
		trits, scale, _ := readLatentTrits(t, dir, hf)
		got, gotScale, err := model.DecodeI2S(m.Tensors[gguf].Data, len(trits))
		require.NoError(t, err)
		require.Equal(t, trits, got, gguf)
		require.Equal(t, scale, gotScale, gguf)
	}
}

// TestHFLlamaPackedMatchesLatent: the packed llama form (uint8 + weight_scale = 1/mean|W|, which
// BitLinear divides by) loads to the trits of the latent form written from the same seed, with
// the scale equal up to weight_scale's bf16 rounding.
func TestHFLlamaPackedMatchesLatent(t *testing.T) {
	lat, err := model.Open(writeLayoutDir(t, "llama158", false))
	require.NoError(t, err)
	defer lat.Close()
	pk, err := model.Open(writeLayoutDir(t, "llama158", true))
	require.NoError(t, err)
	defer pk.Close()
	require.Contains(t, pk.PackedScaleRule, "divides")
	for _, s := range lat.Config.TensorSpecs() {
		if s.Kind != model.KindWeight {
			continue
		}
		n := int(lat.Tensors[s.Name].Elements())
		wt, ws, err := model.DecodeI2S(lat.Tensors[s.Name].Data, n)
		require.NoError(t, err)
		gt, gs, err := model.DecodeI2S(pk.Tensors[s.Name].Data, n)
		require.NoError(t, err)
		require.Equal(t, wt, gt, s.Name)
		require.InEpsilon(t, ws, gs, 1.0/128, s.Name)
	}
}

// TestHFLlamaNormMatchesNeox checks the permutation's meaning: the llama directory as bitgpu runs
// it (Q/K permuted, NORM RoPE) and the same trits in Hugging Face order with NEOX RoPE (what
// transformers computes) compute the same function. They differ only in the order of the
// attention dot products' sums, so the logits agree closely rather than bit for bit, while
// NEOX over the permuted rows (a missing or wrong permutation) is far off.
func TestHFLlamaNormMatchesNeox(t *testing.T) {
	dir := writeLayoutDir(t, "llama158", false)
	m, err := model.Open(dir)
	require.NoError(t, err)
	defer m.Close()
	tokens := append([]int{m.Config.BOS}, m.Tokenizer.Encode(convertTestText, true)...)
	norm := allLogits(t, m, tokens)

	neox := &model.Model{Config: m.Config, Tokenizer: m.Tokenizer, Tensors: map[string]*model.Tensor{}}
	neox.Config.RoPEMode = model.RoPENeox
	for k, v := range m.Tensors {
		neox.Tensors[k] = v
	}
	wrong := allLogits(t, neox, tokens) // permuted rows, NEOX pairs
	for l := range m.Config.Layers {
		for _, p := range []string{"q", "k"} {
			name := "model.layers." + string(rune('0'+l)) + ".self_attn." + p + "_proj.weight"
			trits, scale, _ := readLatentTrits(t, dir, name)
			data, err := model.EncodeI2S(trits, scale)
			require.NoError(t, err)
			g := "blk." + string(rune('0'+l)) + ".attn_" + p + ".weight"
			neox.Tensors[g] = &model.Tensor{Name: g, Type: model.TypeI2_S, Shape: m.Tensors[g].Shape, Data: data}
		}
	}
	hf := allLogits(t, neox, tokens)
	rel := func(a, b []float32) float64 {
		var d, s float64
		for i := range a {
			d = math.Max(d, math.Abs(float64(a[i]-b[i])))
			s = math.Max(s, math.Abs(float64(a[i])))
		}
		return d / s
	}
	t.Logf("relative max difference: NEOX over HF rows %.3g, NEOX over permuted rows %.3g", rel(hf, norm), rel(wrong, norm))
	require.Less(t, rel(hf, norm), 1e-4, "NORM over permuted rows = NEOX over HF rows")
	require.Greater(t, rel(wrong, norm), 0.05, "the test must be able to tell a wrong permutation")
}

// rewriteSafetensors rewrites dir/model.safetensors after edit changes its tensors (name →
// dtype, shape, data).
func rewriteSafetensors(t *testing.T, dir string, edit func(map[string]*model.SafetensorsTensor)) {
	path := filepath.Join(dir, "model.safetensors")
	st, err := model.OpenSafetensors(path)
	require.NoError(t, err)
	ts := map[string]*model.SafetensorsTensor{}
	for k, v := range st.Tensors {
		c := *v
		c.Data = append([]byte(nil), v.Data...)
		ts[k] = &c
	}
	require.NoError(t, st.Close())
	edit(ts)
	names := make([]string, 0, len(ts))
	for k := range ts {
		names = append(names, k)
	}
	sort.Strings(names)
	hdr := map[string]any{}
	var data []byte
	for _, k := range names {
		v := ts[k]
		hdr[k] = map[string]any{"dtype": v.DType, "shape": v.Shape, "data_offsets": []int{len(data), len(data) + len(v.Data)}}
		data = append(data, v.Data...)
	}
	h, err := json.Marshal(hdr)
	require.NoError(t, err)
	file := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	file = append(append(file, h...), data...)
	require.NoError(t, os.WriteFile(path, file, 0o644))
}

// TestHFLayoutsRefuseWrongTensors: a checkpoint whose names or shapes do not fit its declared
// layout is refused with the tensor named and the layout's expected tensors listed.
func TestHFLayoutsRefuseWrongTensors(t *testing.T) {
	rename := func(from, to string) func(map[string]*model.SafetensorsTensor) {
		return func(ts map[string]*model.SafetensorsTensor) {
			ts[to] = ts[from]
			delete(ts, from)
		}
	}
	cases := []struct {
		name, family string
		packed       bool
		edit         func(map[string]*model.SafetensorsTensor)
		msgs         []string
	}{
		{"1bitLLM with BitNetForCausalLM sub-norm names", "onebit", false,
			rename("model.layers.0.self_attn.inner_attn_ln.weight", "model.layers.0.self_attn.attn_sub_norm.weight"),
			[]string{"tensor model.layers.0.self_attn.attn_sub_norm.weight (in ", "is not part of a BitnetForCausalLM model with 2 layers",
				"self_attn.inner_attn_ln.weight [256]", "mlp.ffn_layernorm.weight [256]", "lm_head.weight"}},
		{"llama with a sub-norm", "llama158", true,
			func(ts map[string]*model.SafetensorsTensor) {
				n := *ts["model.layers.1.input_layernorm.weight"]
				ts["model.layers.1.self_attn.attn_sub_norm.weight"] = &n
			},
			[]string{"tensor model.layers.1.self_attn.attn_sub_norm.weight (in ", "is not part of a LlamaForCausalLM model",
				"self_attn.q_proj.weight [256 256]", "mlp.down_proj.weight [256 256]"}},
		{"llama missing weight_scale", "llama158", true,
			func(ts map[string]*model.SafetensorsTensor) { delete(ts, "model.layers.1.mlp.up_proj.weight_scale") },
			[]string{"tensor model.layers.1.mlp.up_proj.weight is packed but model.layers.1.mlp.up_proj.weight_scale is missing"}},
		{"llama lm_head of the wrong shape", "llama158", false,
			func(ts map[string]*model.SafetensorsTensor) {
				h := ts["lm_head.weight"]
				h.Shape, h.Data = []uint64{299, 256}, h.Data[:299*256*2]
			},
			[]string{"tensor lm_head.weight: expected shape [300 256], found [299 256]"}},
		{"llama without lm_head", "llama158", false,
			func(ts map[string]*model.SafetensorsTensor) { delete(ts, "lm_head.weight") },
			// tie_word_embeddings false in config.json: lm_head is required.
			[]string{"tensor lm_head.weight is missing from the checkpoint (for output.weight, expected shape [300 256] in a LlamaForCausalLM checkpoint)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeLayoutDir(t, c.family, c.packed)
			rewriteSafetensors(t, dir, c.edit)
			_, err := model.Open(dir)
			require.Error(t, err)
			for _, msg := range c.msgs {
				require.ErrorContains(t, err, msg)
			}
		})
	}

	// A LlamaForCausalLM directory that does not say it is ternary is refused naming the key.
	dir := writeLayoutDir(t, "llama158", true)
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, json.Unmarshal(b, &cfg))
	delete(cfg, "quantization_config")
	b, err = json.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o644))
	_, err = model.Open(dir)
	require.ErrorContains(t, err, "quantization_config.quant_method absent: want \"bitnet\"")
}

// TestHFLayoutNames pins the per-layout HF names of the tensors that differ between layouts.
func TestHFLayoutNames(t *testing.T) {
	for _, c := range []struct {
		layout   model.HFLayout
		gguf, hf string
		ok       bool
	}{
		{model.HFBitNet, "blk.3.attn_sub_norm.weight", "model.layers.3.self_attn.attn_sub_norm.weight", true},
		{model.HFOneBit, "blk.3.attn_sub_norm.weight", "model.layers.3.self_attn.inner_attn_ln.weight", true},
		{model.HFOneBit, "blk.0.ffn_sub_norm.weight", "model.layers.0.mlp.ffn_layernorm.weight", true},
		{model.HFOneBit, "blk.0.ffn_up.weight", "model.layers.0.mlp.up_proj.weight", true},
		{model.HFLlama, "blk.0.ffn_sub_norm.weight", "", false},
		{model.HFLlama, "output.weight", "lm_head.weight", true},
		{model.HFLlama, "blk.2.attn_k.weight", "model.layers.2.self_attn.k_proj.weight", true},
	} {
		hf, ok := c.layout.TensorName(c.gguf)
		require.Equal(t, c.ok, ok, "%s %s", c.layout, c.gguf)
		require.Equal(t, c.hf, hf, "%s %s", c.layout, c.gguf)
	}
	_, err := model.PermuteQKNorm(make([]int8, 6*2), 6, 2, 2)
	require.ErrorContains(t, err, "want rows a multiple of 2·heads")
}

// TestConvertIgnoreMergesOff: `convert` of a directory whose tokenizer.json has the LLaMA-3 regex
// with ignore_merges false is refused, naming the token, when the flag changes tokenization. The
// synthetic vocabulary has such a token: "Ġis" ("i s" outranks any merge of "Ġ" with "i"), so
// " is" is one token with ignore_merges (what GGUF llama-bpe implies) and two without.
func TestConvertIgnoreMergesOff(t *testing.T) {
	dir := writeConvertTestDir(t)
	with, err := model.Open(dir)
	require.NoError(t, err)
	defer with.Close()
	require.Len(t, with.Tokenizer.Encode(" is", false), 1)

	path := filepath.Join(dir, model.HFTokenizerFile)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var tj map[string]any
	require.NoError(t, json.Unmarshal(b, &tj))
	tj["model"].(map[string]any)["ignore_merges"] = false
	b, err = json.Marshal(tj)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o644))
	without, err := model.Open(dir)
	require.NoError(t, err)
	defer without.Close()
	require.Len(t, without.Tokenizer.Encode(" is", false), 2)

	out := filepath.Join(t.TempDir(), "tiny.gguf")
	err = model.ConvertHF(dir, out, model.TypeI2_S)
	require.ErrorContains(t, err, `ignore_merges = false but GGUF tokenizer.ggml.pre "llama-bpe" implies true, and that changes tokenization: token "Ġis" (id 289)`)
	_, statErr := os.Stat(out)
	require.True(t, os.IsNotExist(statErr), "nothing written")
}
