package model_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// convertTestOptions is a small checkpoint whose every projection input width is 256, so that all
// three ternary types can encode it and every TQ row is exactly one 256-weight block.
var convertTestOptions = model.SynthOptions{Vocab: 300, Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, FFN: 256, Ctx: 32, RoPEBase: 500000, RMSEps: 1e-5, Seed: 7}

// convertTestText exercises merges, spaces, digits, punctuation and a special token.
const convertTestText = "Hello world, the 2024 results:\n\nit is<|eot_id|> done."

// writeConvertTestDir writes the synthetic checkpoint directory and returns its path.
func writeConvertTestDir(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "tiny-hf")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, model.WriteSyntheticHF(dir, convertTestOptions))
	return dir
}

// allLogits prefills tokens into a fresh cpuref backend and returns every position's logits.
func allLogits(t *testing.T, m *model.Model, tokens []int) []float32 {
	b, err := cpuref.New(m, 0)
	require.NoError(t, err)
	defer b.Close()
	logits, err := b.Prefill(tokens, true)
	require.NoError(t, err)
	require.Len(t, logits, len(tokens)*m.Config.VocabSize)
	return logits
}

// roundScalesToF16 replaces every I2_S projection of m with the same trits and its scale rounded
// to f16 — what a TQ1_0/TQ2_0 block stores.
func roundScalesToF16(t *testing.T, m *model.Model) {
	for _, s := range m.Config.TensorSpecs() {
		if s.Kind != model.KindWeight {
			continue
		}
		w := m.Tensors[s.Name]
		require.Equal(t, model.TypeI2_S, w.Type, s.Name)
		trits, scale, err := model.DecodeI2S(w.Data, int(w.Elements()))
		require.NoError(t, err)
		data, err := model.EncodeI2S(trits, model.RoundF16(scale))
		require.NoError(t, err)
		m.Tensors[s.Name] = &model.Tensor{Name: w.Name, Type: w.Type, Shape: w.Shape, Data: data}
	}
}

// TestConvertHFMatchesDirectory converts a checkpoint directory to each ternary type and requires
// that the GGUF opens to the same config, tokenizer and cpuref logits as the directory itself.
//
// I2_S holds exactly the trits and f32 scales that OpenHF computes, so its logits must be
// identical bit for bit. TQ2_0/TQ1_0 hold the same trits with the scale rounded to f16 in each
// 256-weight block; every row here is one block, so cpuref does the same arithmetic as for I2_S
// with the rounded scale, and the logits must equal, bit for bit, those of the directory model
// with its scales rounded to f16.
func TestConvertHFMatchesDirectory(t *testing.T) {
	dir := writeConvertTestDir(t)
	ref, err := model.Open(dir)
	require.NoError(t, err)
	tokens := append([]int{ref.Config.BOS}, ref.Tokenizer.Encode(convertTestText, true)...)
	require.Greater(t, len(tokens), 12)
	want := allLogits(t, ref, tokens)
	roundScalesToF16(t, ref)
	wantTQ := allLogits(t, ref, tokens)
	require.NotEqual(t, want, wantTQ, "rounding the scales to f16 must change something, or the TQ check proves nothing")

	for _, typ := range []model.TensorType{model.TypeI2_S, model.TypeTQ2_0, model.TypeTQ1_0} {
		t.Run(typ.String(), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "tiny.gguf")
			require.NoError(t, model.ConvertHF(dir, out, typ))
			g, err := model.OpenGGUF(out)
			require.NoError(t, err)
			defer g.Close()
			require.Equal(t, "bitnet-b1.58", g.Meta["general.architecture"])
			require.Equal(t, "tiny-hf", g.Meta["general.name"])
			require.Equal(t, "llama-bpe", g.Meta[model.KeyTokenizerPre])
			require.Equal(t, model.SynthChatTemplate, g.Meta[model.KeyChatTemplate])
			require.Equal(t, model.TypeF16, g.Tensor("token_embd.weight").Type)
			require.Nil(t, g.Tensor("output.weight"), "embedding stays tied")
			require.Equal(t, typ, g.Tensor("blk.1.ffn_down.weight").Type)
			require.Equal(t, model.TypeF32, g.Tensor("blk.1.ffn_sub_norm.weight").Type)

			m, err := model.Open(out)
			require.NoError(t, err)
			defer m.Close()
			wantCfg := ref.Config
			require.Equal(t, wantCfg, m.Config)
			require.Equal(t, ref.Tokenizer.Encode(convertTestText, true), m.Tokenizer.Encode(convertTestText, true))
			require.Equal(t, convertTestText, m.Tokenizer.Decode(m.Tokenizer.Encode(convertTestText, true)))
			got := allLogits(t, m, tokens)
			if typ == model.TypeI2_S {
				require.Equal(t, want, got)
			} else {
				require.Equal(t, wantTQ, got)
			}
		})
	}
}

// TestConvertHFQKOrder checks that Q and K rows are stored in Hugging Face order (no
// permutation), as the official 2B4T GGUF has them: the converted trits of attn_q and attn_k are
// exactly the absmean trits of the safetensors rows in file order.
func TestConvertHFQKOrder(t *testing.T) {
	dir := writeConvertTestDir(t)
	st, err := model.OpenSafetensors(filepath.Join(dir, "model.safetensors"))
	require.NoError(t, err)
	defer st.Close()
	out := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, model.ConvertHF(dir, out, model.TypeI2_S))
	m, err := model.Open(out)
	require.NoError(t, err)
	defer m.Close()
	for gguf, hf := range map[string]string{"blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight", "blk.1.attn_k.weight": "model.layers.1.self_attn.k_proj.weight"} {
		src := st.Tensors[hf]
		require.NotNil(t, src, hf)
		lat := make([]float32, len(src.Data)/2)
		require.NoError(t, model.DecodeBF16Row(src.Data, lat))
		wantTrits, wantScale := model.QuantizeAbsmean(lat)
		gotTrits, gotScale, err := model.DecodeI2S(m.Tensors[gguf].Data, len(lat))
		require.NoError(t, err)
		require.Equal(t, wantTrits, gotTrits, gguf)
		require.Equal(t, wantScale, gotScale, gguf)
	}
}

func TestConvertHFErrors(t *testing.T) {
	dir := writeConvertTestDir(t)
	tmp := t.TempDir()

	err := model.ConvertHF(dir, filepath.Join(tmp, "x.gguf"), model.TypeF16)
	require.ErrorContains(t, err, "not a ternary type")

	err = model.ConvertHF(filepath.Join(tmp, "missing"), filepath.Join(tmp, "x.gguf"), model.TypeI2_S)
	require.ErrorContains(t, err, "missing")

	// An output directory that does not exist: an error naming the file, nothing written.
	out := filepath.Join(tmp, "no", "such", "dir", "x.gguf")
	err = model.ConvertHF(dir, out, model.TypeI2_S)
	require.ErrorContains(t, err, out)

	// Widths that are not a multiple of 256 cannot be TQ-encoded: the error names the tensor, and
	// an existing output file is left as it was.
	narrow := filepath.Join(tmp, "narrow")
	require.NoError(t, os.Mkdir(narrow, 0o755))
	opt := convertTestOptions
	opt.Dim, opt.FFN = 128, 384
	require.NoError(t, model.WriteSyntheticHF(narrow, opt))
	out = filepath.Join(tmp, "keep.gguf")
	require.NoError(t, os.WriteFile(out, []byte("previous"), 0o644))
	err = model.ConvertHF(narrow, out, model.TypeTQ1_0)
	require.ErrorContains(t, err, "blk.0.attn_q.weight: input width 128 is not a multiple of 256")
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, "previous", string(b))
	entries, err := os.ReadDir(tmp)
	require.NoError(t, err)
	for _, e := range entries {
		require.NotContains(t, e.Name(), ".tmp", "no temporary file left behind")
	}
	// The same narrow model converts fine to I2_S.
	require.NoError(t, model.ConvertHF(narrow, out, model.TypeI2_S))
}

func TestTernaryTypeByName(t *testing.T) {
	for name, want := range map[string]model.TensorType{"i2_s": model.TypeI2_S, "TQ2_0": model.TypeTQ2_0, "tq1_0": model.TypeTQ1_0} {
		got, err := model.TernaryTypeByName(name)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := model.TernaryTypeByName("q4_0")
	require.EqualError(t, err, `tensor type "q4_0": want i2_s, tq2_0 or tq1_0`)
}

// TestOpenGGUFBytes opens a converted model from memory and requires the same model as from the
// file; a corrupt buffer is an error naming the given name.
func TestOpenGGUFBytes(t *testing.T) {
	dir := writeConvertTestDir(t)
	g, err := model.HFToGGUF(dir, model.TypeI2_S)
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, model.WriteGGUF(&buf, g))
	path := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))

	fromFile, err := model.Open(path)
	require.NoError(t, err)
	defer fromFile.Close()
	fromBytes, err := model.OpenGGUFBytes("embedded.gguf", buf.Bytes())
	require.NoError(t, err)
	defer fromBytes.Close()
	require.Equal(t, "embedded.gguf", fromBytes.Path)
	require.Equal(t, fromFile.Config, fromBytes.Config)
	require.Equal(t, len(fromFile.Tensors), len(fromBytes.Tensors))
	for name, tf := range fromFile.Tensors {
		tb := fromBytes.Tensors[name]
		require.NotNil(t, tb, name)
		require.Equal(t, tf.Type, tb.Type, name)
		require.Equal(t, tf.Shape, tb.Shape, name)
		require.Equal(t, tf.Data, tb.Data, name)
	}
	require.Equal(t, fromFile.Tokenizer.Encode(convertTestText, true), fromBytes.Tokenizer.Encode(convertTestText, true))

	_, err = model.OpenGGUFBytes("embedded.gguf", []byte("GGUF\x03\x00\x00\x00"))
	require.ErrorContains(t, err, "embedded.gguf")
}
