package main

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// writeTestPEFT writes a PEFT LoRA directory of rank 8, lora_alpha 16, adapting q_proj of
// layer 0 (F32 factors) and down_proj of layer 1 (BF16) of WriteSynthetic's default model
// (dim 256, FFN 768); edit may change the config first. It returns the directory.
func writeTestPEFT(t *testing.T, edit func(cfg map[string]any)) string {
	dir := filepath.Join(t.TempDir(), "peft")
	require.NoError(t, os.Mkdir(dir, 0o755))
	cfg := map[string]any{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": []string{"q_proj", "down_proj"},
		"bias": "none", "use_dora": false, "use_rslora": false, "modules_to_save": nil}
	if edit != nil {
		edit(cfg)
	}
	b, err := json.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "adapter_config.json"), b, 0o644))

	type entry struct {
		name, dtype string
		shape       []int
	}
	entries := []entry{
		{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "F32", []int{8, 256}},
		{"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "F32", []int{256, 8}},
		{"base_model.model.model.layers.1.mlp.down_proj.lora_A.weight", "BF16", []int{8, 768}},
		{"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight", "BF16", []int{256, 8}},
	}
	hdr := map[string]any{}
	var data []byte
	for i, e := range entries {
		n := e.shape[0] * e.shape[1]
		start := len(data)
		for j := 0; j < n; j++ {
			v := float32(math.Sin(float64(i*1000+j))) * 0.1
			if e.dtype == "F32" {
				data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
			} else {
				data = binary.LittleEndian.AppendUint16(data, model.F32ToBF16(v))
			}
		}
		hdr[e.name] = map[string]any{"dtype": e.dtype, "shape": e.shape, "data_offsets": []int{start, len(data)}}
	}
	h, err := json.Marshal(hdr)
	require.NoError(t, err)
	file := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	file = append(append(file, h...), data...)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "adapter_model.safetensors"), file, 0o644))
	return dir
}

// writeTestBase writes WriteSynthetic's default model of family and returns its path.
func writeTestBase(t *testing.T, family string) string {
	path := filepath.Join(t.TempDir(), "base.gguf")
	require.NoError(t, model.WriteSynthetic(path, model.SynthOptions{Family: family}))
	return path
}

func TestConvertLoRACommand(t *testing.T) {
	dir := writeTestPEFT(t, nil)
	out := filepath.Join(t.TempDir(), "adapter.gguf")

	// Without -m: the default architecture, factors as in the directory.
	stdout, stderr, code := runCLI(t, nil, "convert-lora", dir, "-o", out)
	require.Equal(t, 0, code, stderr)
	require.Empty(t, stdout)
	require.Contains(t, stderr, "wrote "+out)
	require.Contains(t, stderr, "bitnet-b1.58, 2 targets, rank 8, alpha 16, not checked against a base model")
	src, err := model.OpenLoRA(dir)
	require.NoError(t, err)
	l, err := model.OpenLoRA(out)
	require.NoError(t, err)
	require.Equal(t, model.ArchBitNetB158, l.Arch)
	require.Equal(t, float32(16), l.Alpha)
	for name, p := range src.Targets {
		require.Equal(t, p.A.Data, l.Targets[name].A.Data, name)
		require.Equal(t, p.B.Data, l.Targets[name].B.Data, name)
	}

	// With -m: checked against the base; a llama base gets permuted Q rows and its arch.
	base := writeTestBase(t, "")
	_, stderr, code = runCLI(t, nil, "convert-lora", dir, "-o", out, "-m", base)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "checked against "+base)
	llama := writeTestBase(t, "llama158")
	_, stderr, code = runCLI(t, nil, "convert-lora", dir, "-o", out, "-m", llama)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "llama, 2 targets")
	l, err = model.OpenLoRA(out)
	require.NoError(t, err)
	require.Equal(t, model.ArchLlama, l.Arch)
	require.NotEqual(t, src.Targets["blk.0.attn_q.weight"].B.Data, l.Targets["blk.0.attn_q.weight"].B.Data, "Q rows permuted for NORM RoPE")
	require.Equal(t, src.Targets["blk.1.ffn_down.weight"].B.Data, l.Targets["blk.1.ffn_down.weight"].B.Data)

	// RSLoRA: llama.cpp's alpha is lora_alpha·sqrt(r).
	rs := writeTestPEFT(t, func(c map[string]any) { c["use_rslora"] = true })
	_, stderr, code = runCLI(t, nil, "convert-lora", rs, "-o", out, "--arch", "bitnet-25")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "bitnet-25, 2 targets, rank 8, alpha 16 (rslora: alpha/sqrt(rank))")
	g, err := model.OpenGGUF(out)
	require.NoError(t, err)
	require.Equal(t, float32(16*math.Sqrt(8)), g.Meta[model.KeyLoRAAlpha])
	require.NoError(t, g.Close())
}

func TestConvertLoRACommandErrors(t *testing.T) {
	dir := writeTestPEFT(t, nil)
	dora := writeTestPEFT(t, func(c map[string]any) { c["use_dora"] = true })
	small := filepath.Join(t.TempDir(), "small.gguf")
	require.NoError(t, model.WriteSynthetic(small, model.SynthOptions{Layers: 1}))
	out := filepath.Join(t.TempDir(), "adapter.gguf")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"convert-lora", dir}, `bitgpu: required flag(s) "output" not set`},
		{[]string{"convert-lora", dora, "-o", filepath.Join(dir, "no", "a.gguf")}, "bitgpu: --output " + filepath.Join(dir, "no", "a.gguf") + ": directory " + filepath.Join(dir, "no") + " does not exist"},
		{[]string{"convert-lora", dir, "-o", out, "--arch", "gpt2"}, `bitgpu: --arch: architecture "gpt2": want bitnet-b1.58, bitnet-25, bitnet or llama`},
		{[]string{"convert-lora", dir, "-o", out, "--arch", "llama"}, "bitgpu: --arch llama: blk.0.attn_q.weight needs its rows permuted per head for the base's NORM RoPE: give the base model with -m"},
		{[]string{"convert-lora", dir, "-o", out, "-m", writeTestBase(t, ""), "--arch", "llama"}, "bitgpu: --arch llama: the base model "},
		{[]string{"convert-lora", dir, "-o", out, "-m", small}, "bitgpu: " + dir + ": tensor base_model.model.model.layers.1.mlp.down_proj.lora_A.weight adapts layer 1, but the base model " + small + " has 1 layers"},
		{[]string{"convert-lora", dir, "-o", out, "-m", filepath.Join(dir, "nope.gguf")}, "bitgpu: stat " + filepath.Join(dir, "nope.gguf")},
		{[]string{"convert-lora", dora, "-o", out}, "bitgpu: " + filepath.Join(dora, "adapter_config.json") + ": use_dora = true: DoRA adapters are not supported"},
		{[]string{"convert-lora", small, "-o", out}, "bitgpu: " + small + ": not a directory"},
		{[]string{"convert-lora", filepath.Join(dir, "nope"), "-o", out}, "bitgpu: stat " + filepath.Join(dir, "nope")},
	} {
		stdout, stderr, code := runCLI(t, nil, c.args...)
		require.Equal(t, 1, code, c.args)
		require.Empty(t, stdout)
		require.Equal(t, 1, strings.Count(stderr, "\n"), "one error line: %q", stderr)
		require.True(t, strings.HasPrefix(stderr, c.want), "%v: %q", c.args, stderr)
		_, err := os.Stat(out)
		require.True(t, os.IsNotExist(err), "nothing written on error: %v", c.args)
	}
}

func TestInspectLoRA(t *testing.T) {
	dir := writeTestPEFT(t, nil)
	out := filepath.Join(t.TempDir(), "adapter.gguf")
	_, stderr, code := runCLI(t, nil, "convert-lora", dir, "-o", out)
	require.Equal(t, 0, code, stderr)

	stdout, stderr, code := runCLI(t, nil, "inspect", out)
	require.Equal(t, 0, code, stderr)
	for _, want := range []string{
		"format:      GGUF v3 LoRA adapter (llama.cpp), 5 metadata keys, 4 tensors",
		"name:        peft", "arch:        bitnet-b1.58", "alpha:       16 (scaling alpha/rank)", "rank:        8",
		"targets:     2", "attn_q       (q_proj) layers 0", "ffn_down     (down_proj) layers 1",
		"blk.0.attn_q.weight.lora_a    F16   [256 8]  4096", "4 tensors, 24576 bytes",
	} {
		require.Contains(t, stdout, want)
	}

	stdout, stderr, code = runCLI(t, nil, "inspect", dir)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "format:      PEFT LoRA adapter")
	require.Contains(t, stdout, "arch:        (the base model's)")
	require.Contains(t, stdout, "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")

	// An adapter bitgpu refuses is still listed, then the error.
	g := &model.GGUF{Version: 3}
	g.Set("general.architecture", "bitnet-b1.58")
	g.Set(model.KeyGeneralType, "adapter")
	g.Set(model.KeyAdapterType, "control_vector")
	bad := filepath.Join(t.TempDir(), "cv.gguf")
	require.NoError(t, model.WriteGGUFFile(bad, g))
	stdout, stderr, code = runCLI(t, nil, "inspect", bad)
	require.Equal(t, 1, code)
	require.Contains(t, stdout, "GGUF v3 adapter, 3 metadata keys, 0 tensors")
	require.Contains(t, stderr, `adapter.type = "control_vector", want "lora"`)
}

func TestLayerRanges(t *testing.T) {
	require.Equal(t, "0-3, 5, 7-8", layerRanges([]int{0, 1, 2, 3, 5, 7, 8}))
	require.Equal(t, "4", layerRanges([]int{4}))
}
