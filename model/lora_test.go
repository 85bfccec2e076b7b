package model

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// peftFactor is one factor of a test PEFT adapter: its values in PyTorch row-major order.
type peftFactor struct {
	name  string
	dtype string // F32, BF16 or F16
	shape []uint64
	vals  []float32
}

// loraVals returns n deterministic values in (-1, 1) with full f32 mantissas, so F32 → F16
// conversion has to round; bf16 inputs are the same values rounded to bf16.
func loraVals(seed uint64, n int) []float32 {
	rng := rand.New(rand.NewPCG(seed, 7))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.Float64()*2 - 1)
	}
	return v
}

// encodeAs encodes vals as dtype bytes (BF16 rounded to nearest even).
func encodeAs(dtype string, vals []float32) []byte {
	switch dtype {
	case "F32":
		return EncodeF32(vals)
	case "BF16":
		return EncodeBF16(vals)
	}
	return EncodeF16(vals)
}

// wantF16 is the F16 bits OpenLoRA must produce for vals stored as dtype.
func wantF16(dtype string, vals []float32) []byte {
	x := append([]float32(nil), vals...)
	if dtype == "BF16" {
		for i, v := range x {
			x[i] = BF16ToF32(F32ToBF16(v))
		}
	}
	return EncodeF16(x)
}

// peftPair returns the A [r, in] and B [out, r] factors PEFT saves for module (e.g.
// "self_attn.q_proj") of layer, in dtype.
func peftPair(layer int, module string, r, in, out int, dtype string) []peftFactor {
	pre := "base_model.model.model.layers." + strconv.Itoa(layer) + "." + module
	seed := uint64(layer*100 + len(module))
	return []peftFactor{
		{pre + ".lora_A.weight", dtype, []uint64{uint64(r), uint64(in)}, loraVals(seed, r*in)},
		{pre + ".lora_B.weight", dtype, []uint64{uint64(out), uint64(r)}, loraVals(seed+1, out*r)},
	}
}

// peftConfigJSON is a typical adapter_config.json as PEFT 0.13+ writes it.
func peftConfigJSON() map[string]any {
	return map[string]any{
		"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
		"use_rslora": false, "fan_in_fan_out": false, "bias": "none", "use_dora": false, "lora_dropout": 0.05,
		"modules_to_save": nil, "rank_pattern": map[string]any{}, "alpha_pattern": map[string]any{}, "task_type": "CAUSAL_LM",
		"base_model_name_or_path": "microsoft/bitnet-b1.58-2B-4T-bf16", "layer_replication": nil,
	}
}

// writePEFT writes a PEFT directory with cfg as adapter_config.json and the factors as
// adapter_model.safetensors, and returns it.
func writePEFT(t *testing.T, cfg map[string]any, factors []peftFactor) string {
	dir := filepath.Join(t.TempDir(), "my-adapter")
	require.NoError(t, os.Mkdir(dir, 0o755))
	b, err := json.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, peftConfigFile), b, 0o644))
	var es []stEntry
	for _, f := range factors {
		es = append(es, stEntry{f.name, f.dtype, f.shape, encodeAs(f.dtype, f.vals)})
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, peftWeightsFile), buildST(es), 0o644))
	return dir
}

// tinyFactors are LoRA factors fitting WriteSynthetic's default model (dim 256, 4 heads, 2 KV
// heads of 64, FFN 768, 2 layers): q_proj of layer 0 in F32, k_proj of layer 0 and down_proj of
// layer 1 in BF16, v_proj of layer 1 in F16.
func tinyFactors(r int) []peftFactor {
	var f []peftFactor
	f = append(f, peftPair(0, "self_attn.q_proj", r, 256, 256, "F32")...)
	f = append(f, peftPair(0, "self_attn.k_proj", r, 256, 128, "BF16")...)
	f = append(f, peftPair(1, "mlp.down_proj", r, 768, 256, "BF16")...)
	f = append(f, peftPair(1, "self_attn.v_proj", r, 256, 128, "F16")...)
	return f
}

// tinyBase writes and opens WriteSynthetic's model of family ("" for 2b4t).
func tinyBase(t *testing.T, family string) *Model {
	path := filepath.Join(t.TempDir(), "base.gguf")
	require.NoError(t, WriteSynthetic(path, SynthOptions{Family: family}))
	m, err := Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// TestOpenLoRAPEFT: a PEFT directory with F32, BF16 and F16 factors opens as F16 tensors in GGUF
// shape order, rounded to nearest even, with lora_alpha, use_rslora and the directory name.
func TestOpenLoRAPEFT(t *testing.T) {
	factors := tinyFactors(8)
	dir := writePEFT(t, peftConfigJSON(), factors)
	l, err := OpenLoRA(dir)
	require.NoError(t, err)
	require.Equal(t, dir, l.Path)
	require.Equal(t, "my-adapter", l.Name)
	require.Equal(t, float32(16), l.Alpha)
	require.False(t, l.RSLoRA)
	require.True(t, l.HFRows)
	require.Equal(t, Arch(""), l.Arch)
	require.Len(t, l.Targets, 4)
	targets := map[string]string{
		"self_attn.q_proj": "blk.0.attn_q.weight", "self_attn.k_proj": "blk.0.attn_k.weight",
		"mlp.down_proj": "blk.1.ffn_down.weight", "self_attn.v_proj": "blk.1.attn_v.weight",
	}
	for i := 0; i < len(factors); i += 2 {
		fa, fb := factors[i], factors[i+1]
		var base string
		for mod, b := range targets {
			if strings.Contains(fa.name, "."+mod+".") {
				base = b
			}
		}
		p, ok := l.Targets[base]
		require.True(t, ok, base)
		require.Equal(t, 8, p.Rank())
		require.Equal(t, TypeF16, p.A.Type)
		require.Equal(t, []uint64{fa.shape[1], fa.shape[0]}, p.A.Shape, "A is GGUF [in, r]")
		require.Equal(t, []uint64{fb.shape[1], fb.shape[0]}, p.B.Shape, "B is GGUF [r, out]")
		require.Equal(t, wantF16(fa.dtype, fa.vals), p.A.Data, fa.name)
		require.Equal(t, wantF16(fb.dtype, fb.vals), p.B.Data, fb.name)
	}
	// Scaling: alpha/r = 2.
	require.Equal(t, float32(2), l.Scaling(l.Targets["blk.0.attn_q.weight"], 1))

	// The config or the weights file may be named instead of the directory.
	for _, f := range []string{peftConfigFile, peftWeightsFile} {
		l2, err := OpenLoRA(filepath.Join(dir, f))
		require.NoError(t, err)
		require.Equal(t, l.Targets, l2.Targets)
	}
}

// TestOpenLoRAPEFTPatterns: rank_pattern gives a module its own rank (the rank comes from the
// factors and must agree); an alpha_pattern equal to lora_alpha is accepted; a regular-expression
// target_modules and use_rslora are read; defaults r = 8 and lora_alpha = 8 apply when absent.
func TestOpenLoRAPEFTPatterns(t *testing.T) {
	cfg := peftConfigJSON()
	cfg["rank_pattern"] = map[string]any{"layers.1.mlp.down_proj": 4}
	cfg["alpha_pattern"] = map[string]any{"q_proj": 16.0}
	cfg["target_modules"] = `.*\.(q_proj|down_proj)`
	cfg["use_rslora"] = true
	var f []peftFactor
	f = append(f, peftPair(0, "self_attn.q_proj", 8, 256, 256, "F32")...)
	f = append(f, peftPair(1, "mlp.down_proj", 4, 768, 256, "F32")...)
	l, err := OpenLoRA(writePEFT(t, cfg, f))
	require.NoError(t, err)
	require.Equal(t, 8, l.Targets["blk.0.attn_q.weight"].Rank())
	require.Equal(t, 4, l.Targets["blk.1.ffn_down.weight"].Rank())
	require.True(t, l.RSLoRA)
	require.Equal(t, float32(16/math.Sqrt(4)), l.Scaling(l.Targets["blk.1.ffn_down.weight"], 1))

	delete(cfg, "r")
	delete(cfg, "lora_alpha")
	cfg["modules_to_save"] = []string{} // empty lists and objects are "none"
	cfg["layer_replication"] = map[string]any{}
	cfg["rank_pattern"] = map[string]any{}
	cfg["alpha_pattern"] = map[string]any{}
	cfg["target_modules"] = "all-linear"
	l, err = OpenLoRA(writePEFT(t, cfg, peftPair(0, "self_attn.q_proj", 8, 256, 256, "F32")))
	require.NoError(t, err)
	require.Equal(t, float32(8), l.Alpha)
}

// TestOpenLoRAPEFTRefusals: every configuration or tensor bitgpu cannot honour is refused with
// one error naming the field or the tensor.
func TestOpenLoRAPEFTRefusals(t *testing.T) {
	q := func() []peftFactor { return peftPair(0, "self_attn.q_proj", 8, 256, 256, "F32") }
	with := func(k string, v any) func(map[string]any) { return func(c map[string]any) { c[k] = v } }
	for _, c := range []struct {
		name    string
		cfg     func(map[string]any)
		factors func() []peftFactor
		msg     string
	}{
		{"dora", with("use_dora", true), q, "use_dora = true: DoRA"},
		{"fan_in_fan_out", with("fan_in_fan_out", true), q, "fan_in_fan_out = true"},
		{"bias", with("bias", "lora_only"), q, `bias = "lora_only"`},
		{"lora_bias", with("lora_bias", true), q, "lora_bias = true"},
		{"modules_to_save", with("modules_to_save", []string{"lm_head"}), q, `modules_to_save = ["lm_head"]`},
		{"layer_replication", with("layer_replication", [][]int{{0, 2}}), q, "layer_replication"},
		{"alora", with("alora_invocation_tokens", []int{5, 6}), q, "alora_invocation_tokens = [5,6]: activated LoRA"},
		{"peft_type", with("peft_type", "LOHA"), q, `peft_type = "LOHA"`},
		{"r", with("r", 0), q, "r = 0, want a positive rank"},
		{"alpha", with("lora_alpha", -1), q, "lora_alpha = -1"},
		{"target lm_head", with("target_modules", []string{"q_proj", "lm_head"}), q, `target_modules entry "lm_head" is not one of the projections`},
		{"target embed", with("target_modules", []string{"embed_tokens"}), q, `target_modules entry "embed_tokens"`},
		{"target regex lm_head", with("target_modules", "lm_head|.*q_proj"), q, `target_modules = "lm_head|.*q_proj" matches lm_head`},
		{"target regex embed", with("target_modules", ".*"), q, `target_modules = ".*" matches model.embed_tokens`},
		{"target regex bad", with("target_modules", "q_proj("), q, `target_modules = "q_proj(" is not a regular expression`},
		{"target not listed", with("target_modules", []string{"v_proj"}), q, "adapts model.layers.0.self_attn.q_proj, which target_modules does not name"},
		{"alpha_pattern", with("alpha_pattern", map[string]any{"q_proj": 32}), q, "alpha_pattern gives model.layers.0.self_attn.q_proj alpha 32, not lora_alpha 16"},
		{"rank_pattern", with("rank_pattern", map[string]any{"q_proj": 4}), q, "rank 8, but adapter_config.json: rank_pattern gives 4"},
		{"rank_pattern ambiguous", with("rank_pattern", map[string]any{"q_proj": 4, "self_attn.q_proj": 8}), q, `rank_pattern keys "q_proj" and "self_attn.q_proj" both match`},
		{"rank_pattern bad", with("rank_pattern", map[string]any{"(": 4}), q, `rank_pattern key "(" is not a pattern`},
		{"bad json", nil, q, "adapter_config.json: invalid character"},
		{"r type", with("r", "eight"), q, "adapter_config.json: json: cannot unmarshal string"},
		{"rank", nil, func() []peftFactor { return peftPair(0, "self_attn.q_proj", 4, 256, 256, "F32") }, "lora_A.weight has rank 4, but adapter_config.json: r = 8"},
		{"missing B", nil, func() []peftFactor { return q()[:1] }, "q_proj.lora_A.weight has no partner base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"},
		{"missing A", nil, func() []peftFactor { return q()[1:] }, "q_proj.lora_B.weight has no partner"},
		{"rank mismatch", nil, func() []peftFactor {
			f := q()
			f[1] = peftPair(0, "self_attn.q_proj", 4, 256, 256, "F32")[1]
			return f
		}, "lora_A.weight has rank 8 (shape [8 256]) but base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight has rank 4"},
		{"1-D", nil, func() []peftFactor {
			f := q()
			f[0].shape = []uint64{8 * 256}
			return f
		}, "want 2-D factors"},
		{"embed_tokens", nil, func() []peftFactor {
			return append(q(), peftFactor{"base_model.model.model.embed_tokens.lora_embedding_A", "F32", []uint64{8, 300}, make([]float32, 2400)})
		}, "embed_tokens.lora_embedding_A is not a LoRA factor of a projection (want base_model.model.model.layers.N.{self_attn.{q,k,v,o}_proj,mlp.{gate,up,down}_proj}.lora_{A,B}.weight): adapting the embedding"},
		{"lm_head", nil, func() []peftFactor {
			return append(q(), peftFactor{"base_model.model.lm_head.lora_A.weight", "F32", []uint64{8, 256}, make([]float32, 2048)})
		}, "lm_head.lora_A.weight is not a LoRA factor"},
		{"wrong parent", nil, func() []peftFactor { return peftPair(0, "mlp.q_proj", 8, 256, 256, "F32") }, "mlp.q_proj is not one of the seven projections"},
		{"leading zero", nil, func() []peftFactor {
			f := q()
			for i := range f {
				f[i].name = strings.Replace(f[i].name, "layers.0.", "layers.00.", 1)
			}
			return f
		}, `layer index "00" is not canonical`},
		{"overflow", nil, func() []peftFactor {
			f := q()
			f[1].vals[3*8+5] = 70000
			return f
		}, "lora_B.weight: element 29 (row 3, column 5) = 70000 overflows f16"},
		{"nan", nil, func() []peftFactor {
			f := q()
			f[0].vals[1] = float32(math.NaN())
			return f
		}, "lora_A.weight: element 1 (row 0, column 1) = NaN is not finite"},
		{"dtype", nil, func() []peftFactor {
			f := q()
			f[0].dtype = "F64"
			return f
		}, "has type F64, want F16, F32 or BF16"},
		{"empty", nil, func() []peftFactor { return nil }, "no LoRA factors"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := peftConfigJSON()
			cfg["target_modules"] = []string{"q_proj", "v_proj"}
			if c.cfg != nil {
				c.cfg(cfg)
			}
			factors := c.factors()
			var dir string
			if c.name == "dtype" { // F64 has no encoder here: 8 bytes per value
				dir = writePEFT(t, cfg, nil)
				var es []stEntry
				for _, f := range factors {
					d := encodeAs("F32", f.vals)
					if f.dtype == "F64" {
						d = make([]byte, 8*len(f.vals))
					}
					es = append(es, stEntry{f.name, f.dtype, f.shape, d})
				}
				require.NoError(t, os.WriteFile(filepath.Join(dir, peftWeightsFile), buildST(es), 0o644))
			} else {
				dir = writePEFT(t, cfg, factors)
			}
			if c.name == "bad json" {
				require.NoError(t, os.WriteFile(filepath.Join(dir, peftConfigFile), []byte(`{"r": 8,, }`), 0o644))
			}
			_, err := OpenLoRA(dir)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.msg)
			require.Contains(t, err.Error(), dir, "the error names the adapter")
		})
	}
}

// TestOpenLoRAPEFTHostileFiles: truncated or garbled safetensors, a missing weights file and a
// pickle-only directory each give one error, never a panic.
func TestOpenLoRAPEFTHostileFiles(t *testing.T) {
	dir := writePEFT(t, peftConfigJSON(), tinyFactors(8))
	w := filepath.Join(dir, peftWeightsFile)
	good, err := os.ReadFile(w)
	require.NoError(t, err)
	hdr := int(binary.LittleEndian.Uint64(good))
	for _, c := range []struct {
		name string
		data []byte
		msg  string
	}{
		{"empty", nil, "truncated safetensors file"},
		{"header cut", good[:8+hdr/2], "truncated safetensors file"},
		{"data cut", good[:len(good)-3], "run past the end of the file"},
		{"garbled header", append(append(append([]byte(nil), good[:8]...), strings.Repeat("x", hdr)...), good[8+hdr:]...), "safetensors header"},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(w, c.data, 0o644))
			_, err := OpenLoRA(dir)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.msg)
			require.Contains(t, err.Error(), w)
		})
	}
	require.NoError(t, os.Remove(w))
	_, err = OpenLoRA(dir)
	require.ErrorContains(t, err, "no adapter_model.safetensors")
	require.NoError(t, os.WriteFile(filepath.Join(dir, peftPickleFile), []byte("pickle"), 0o644))
	_, err = OpenLoRA(dir)
	require.ErrorContains(t, err, "adapter_model.bin (a PyTorch pickle) is not read")
	require.NoError(t, os.Remove(filepath.Join(dir, peftConfigFile)))
	_, err = OpenLoRA(dir)
	require.ErrorContains(t, err, peftConfigFile)
}

// TestLoRARoundTrip: PEFT → Check → WriteLoRAGGUF → OpenLoRA keeps A and B bit for bit, alpha
// and the scaling; the file carries the keys llama.cpp reads. An RSLoRA adapter stores
// alpha·sqrt(r) for llama.cpp and bitgpu's keys for an exact round trip.
func TestLoRARoundTrip(t *testing.T) {
	base := tinyBase(t, "")
	for _, rs := range []bool{false, true} {
		cfg := peftConfigJSON()
		cfg["use_rslora"] = rs
		l, err := OpenLoRA(writePEFT(t, cfg, tinyFactors(8)))
		require.NoError(t, err)
		require.NoError(t, l.Check(base))
		require.Equal(t, ArchBitNetB158, l.Arch)
		path := filepath.Join(t.TempDir(), "adapter.gguf")
		require.NoError(t, WriteLoRAGGUF(path, l))

		g, err := OpenGGUF(path)
		require.NoError(t, err)
		require.Equal(t, "adapter", g.Meta[KeyGeneralType])
		require.Equal(t, "lora", g.Meta[KeyAdapterType])
		require.Equal(t, string(ArchBitNetB158), g.Meta["general.architecture"])
		require.Equal(t, "my-adapter", g.Meta["general.name"])
		wantAlpha := float32(16)
		if rs {
			wantAlpha = float32(16 * math.Sqrt(8))
			require.Equal(t, true, g.Meta[KeyLoRARSLoRA])
			require.Equal(t, float32(16), g.Meta[KeyLoRAPEFTAlpha])
		} else {
			require.NotContains(t, g.Meta, KeyLoRARSLoRA)
		}
		require.Equal(t, wantAlpha, g.Meta[KeyLoRAAlpha])
		var names []string
		for _, tt := range g.Tensors {
			names = append(names, tt.Name)
		}
		require.Equal(t, []string{
			"blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b", "blk.0.attn_k.weight.lora_a", "blk.0.attn_k.weight.lora_b",
			"blk.1.attn_v.weight.lora_a", "blk.1.attn_v.weight.lora_b", "blk.1.ffn_down.weight.lora_a", "blk.1.ffn_down.weight.lora_b",
		}, names, "base order: layer, then projection")
		require.NoError(t, g.Close())

		back, err := OpenLoRA(path)
		require.NoError(t, err)
		require.Equal(t, l.Alpha, back.Alpha)
		require.Equal(t, rs, back.RSLoRA)
		require.Equal(t, l.Arch, back.Arch)
		require.False(t, back.HFRows)
		require.Len(t, back.Targets, len(l.Targets))
		for name, p := range l.Targets {
			q := back.Targets[name]
			require.Equal(t, p.A.Shape, q.A.Shape, name)
			require.Equal(t, p.B.Shape, q.B.Shape, name)
			require.Equal(t, p.A.Data, q.A.Data, name)
			require.Equal(t, p.B.Data, q.B.Data, name)
			for _, s := range []float32{1, 0.5, -0.3} {
				require.Equal(t, l.Scaling(p, s), back.Scaling(q, s), name)
			}
		}
		require.NoError(t, back.Check(base))

		// GGUF → GGUF is byte-identical.
		again := filepath.Join(t.TempDir(), "again.gguf")
		require.NoError(t, WriteLoRAGGUF(again, back))
		a, _ := os.ReadFile(path)
		b, _ := os.ReadFile(again)
		require.Equal(t, a, b)
	}
}

// ggufAdapter builds a GGUF adapter with alpha 8 and a q_proj pair of layer 0 (rank 4) in typ.
func ggufAdapter(typ TensorType) *GGUF {
	g := &GGUF{Version: 3}
	g.Set("general.architecture", string(ArchBitNetB158))
	g.Set(KeyGeneralType, "adapter")
	g.Set(KeyAdapterType, "lora")
	g.Set(KeyLoRAAlpha, float32(8))
	for i, sh := range [][]uint64{{256, 4}, {4, 256}} {
		vals := loraVals(uint64(i), 1024)
		var data []byte
		switch typ {
		case TypeF32:
			data = EncodeF32(vals)
		case TypeBF16:
			data = EncodeBF16(vals)
		default:
			data = EncodeF16(vals)
		}
		name := "blk.0.attn_q.weight" + []string{loraSuffixA, loraSuffixB}[i]
		g.Tensors = append(g.Tensors, &Tensor{Name: name, Type: typ, Shape: sh, Data: data})
	}
	return g
}

// writeGGUFTemp writes g to a temporary file and returns its path.
func writeGGUFTemp(t *testing.T, g *GGUF) string {
	path := filepath.Join(t.TempDir(), "adapter.gguf")
	require.NoError(t, WriteGGUFFile(path, g))
	return path
}

// TestOpenLoRAGGUFTypes: F16, F32 and BF16 factors of a GGUF adapter open as F16 (rounded to
// nearest even); alpha 0 or absent scales by 1, as llama.cpp reads it.
func TestOpenLoRAGGUFTypes(t *testing.T) {
	for _, typ := range []TensorType{TypeF16, TypeF32, TypeBF16} {
		l, err := OpenLoRA(writeGGUFTemp(t, ggufAdapter(typ)))
		require.NoError(t, err, typ)
		p := l.Targets["blk.0.attn_q.weight"]
		require.Equal(t, []uint64{256, 4}, p.A.Shape)
		require.Equal(t, []uint64{4, 256}, p.B.Shape)
		require.Equal(t, 4, p.Rank())
		dtype := map[TensorType]string{TypeF16: "F16", TypeF32: "F32", TypeBF16: "BF16"}[typ]
		want := loraVals(0, 1024)
		if typ == TypeF16 {
			want = decodeF16s(EncodeF16(want))
		}
		require.Equal(t, wantF16(dtype, want), p.A.Data, typ)
		require.Equal(t, float32(8), l.Alpha)
		require.Equal(t, ArchBitNetB158, l.Arch)
		require.Equal(t, float32(2), l.Scaling(p, 1))
	}
	g := ggufAdapter(TypeF16)
	delete(g.Meta, KeyLoRAAlpha)
	g.Keys = g.Keys[:3]
	l, err := OpenLoRA(writeGGUFTemp(t, g))
	require.NoError(t, err)
	require.Equal(t, float32(0), l.Alpha)
	require.Equal(t, float32(0.5), l.Scaling(l.Targets["blk.0.attn_q.weight"], 0.5))
}

// decodeF16s decodes little-endian f16 bytes.
func decodeF16s(b []byte) []float32 {
	out := make([]float32, len(b)/2)
	_ = DecodeF16Row(b, out)
	return out
}

// TestOpenLoRAGGUFRefusals: what llama.cpp refuses, and what bitgpu cannot apply, is refused with
// the key or tensor named.
func TestOpenLoRAGGUFRefusals(t *testing.T) {
	rename := func(from, to string) func(*GGUF) {
		return func(g *GGUF) {
			for _, tt := range g.Tensors {
				tt.Name = strings.Replace(tt.Name, from, to, 1)
			}
		}
	}
	for _, c := range []struct {
		name string
		edit func(*GGUF)
		msg  string
	}{
		{"model", func(g *GGUF) { g.Meta[KeyGeneralType] = "model" }, `general.type = "model", want "adapter"`},
		{"no type", func(g *GGUF) {
			delete(g.Meta, KeyGeneralType)
			g.Keys = []string{"general.architecture", KeyAdapterType, KeyLoRAAlpha}
		}, "no general.type key: not a llama.cpp LoRA adapter"},
		{"type kind", func(g *GGUF) { g.Meta[KeyGeneralType] = uint32(1) }, "key general.type is a uint32, want a string"},
		{"adapter type", func(g *GGUF) { g.Meta[KeyAdapterType] = "control_vector" }, `adapter.type = "control_vector", want "lora"`},
		{"arch", func(g *GGUF) { g.Meta["general.architecture"] = "" }, "general.architecture is empty"},
		{"no arch", func(g *GGUF) {
			delete(g.Meta, "general.architecture")
			g.Keys = g.Keys[1:]
		}, "no general.architecture key (llama.cpp LoRA adapters have it)"},
		{"no adapter type", func(g *GGUF) {
			delete(g.Meta, KeyAdapterType)
			g.Keys = []string{"general.architecture", KeyGeneralType, KeyLoRAAlpha}
		}, "no adapter.type key"},
		{"alpha type", func(g *GGUF) { g.Meta[KeyLoRAAlpha] = uint32(8) }, "key adapter.lora.alpha is a uint32, want a float32"},
		{"alpha inf", func(g *GGUF) { g.Meta[KeyLoRAAlpha] = float32(math.Inf(1)) }, "adapter.lora.alpha = +Inf, want a finite value"},
		{"alora", func(g *GGUF) { g.Set(KeyALoRAInvocationTokens, []uint32{1, 2}) }, "adapter.alora.invocation_tokens: activated LoRA"},
		{"rslora alpha", func(g *GGUF) { g.Set(KeyLoRARSLoRA, true); g.Set(KeyLoRAPEFTAlpha, float32(8)) }, "adapter.lora.alpha = 8 disagrees with bitgpu.lora.alpha = 8 and blk.0.attn_q.weight of rank 4 (want 16"},
		{"rslora missing", func(g *GGUF) { g.Set(KeyLoRARSLoRA, true) }, "bitgpu.lora.rslora is true but bitgpu.lora.alpha is missing"},
		{"norm", func(g *GGUF) {
			g.Tensors = append(g.Tensors, &Tensor{Name: "blk.0.attn_norm.weight", Type: TypeF32, Shape: []uint64{256}, Data: make([]byte, 1024)})
		}, "tensor blk.0.attn_norm.weight: norm weights in an adapter are not supported"},
		{"suffix", rename(".lora_b", ".lora_c"), "tensor blk.0.attn_q.weight.lora_c is not a LoRA factor"},
		{"token_embd", rename("blk.0.attn_q.weight", "token_embd.weight"), "tensor token_embd.weight.lora_a adapts token_embd.weight, which is not one of the projections"},
		{"output", rename("blk.0.attn_q.weight", "output.weight"), "adapts output.weight"},
		{"sub_norm", rename("attn_q", "attn_sub_norm"), "adapts blk.0.attn_sub_norm.weight"},
		{"unpaired", func(g *GGUF) { g.Tensors = g.Tensors[:1] }, "tensor blk.0.attn_q.weight.lora_a has no partner blk.0.attn_q.weight.lora_b"},
		{"rank", func(g *GGUF) { g.Tensors[1].Shape = []uint64{8, 128} }, "tensor blk.0.attn_q.weight.lora_a has rank 4 (shape [256 4]) but blk.0.attn_q.weight.lora_b has rank 8"},
		{"3-D", func(g *GGUF) { g.Tensors[0].Shape = []uint64{256, 2, 2} }, "want 2-D factors"},
		{"q8_0", func(g *GGUF) {
			g.Tensors[0] = &Tensor{Name: g.Tensors[0].Name, Type: TypeQ8_0, Shape: []uint64{256, 4}, Data: make([]byte, 32*34)}
		}, "tensor blk.0.attn_q.weight.lora_a has type Q8_0, want F16, F32 or BF16"},
		{"inf", func(g *GGUF) { binary.LittleEndian.PutUint16(g.Tensors[1].Data[2*300:], 0x7c00) }, "tensor blk.0.attn_q.weight.lora_b: element 300 (row 75, column 0) = +Inf is not finite"},
		{"empty", func(g *GGUF) { g.Tensors = nil }, "the adapter has no .lora_a/.lora_b tensors"},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := ggufAdapter(TypeF16)
			c.edit(g)
			path := writeGGUFTemp(t, g)
			_, err := OpenLoRA(path)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.msg)
			require.Contains(t, err.Error(), path)
		})
	}
	// A base model is not an adapter.
	path := filepath.Join(t.TempDir(), "base.gguf")
	require.NoError(t, WriteSynthetic(path, SynthOptions{}))
	_, err := OpenLoRA(path)
	require.ErrorContains(t, err, path+": no general.type key: not a llama.cpp LoRA adapter")
	// F32 overflow names the element.
	g := ggufAdapter(TypeF32)
	binary.LittleEndian.PutUint32(g.Tensors[0].Data[4*7:], math.Float32bits(-1e5))
	_, err = OpenLoRA(writeGGUFTemp(t, g))
	require.ErrorContains(t, err, "tensor blk.0.attn_q.weight.lora_a: element 7 (row 0, column 7) = -100000 overflows f16")
}

// TestLoRAFromGGUFFault: a GGUF adapter truncated under its mapping gives an error wrapping
// ErrFileChanged, not a crash.
func TestLoRAFromGGUFFault(t *testing.T) {
	g := ggufAdapter(TypeF32)
	for i := range g.Tensors { // large enough that the factors span pages past the cut
		g.Tensors[i].Shape[1-i] = 256
		g.Tensors[i].Data = EncodeF32(loraVals(9, 256*256))
	}
	path := writeGGUFTemp(t, g)
	mg, err := OpenGGUF(path)
	require.NoError(t, err)
	defer mg.Close()
	require.NoError(t, os.Truncate(path, 4096))
	_, err = LoRAFromGGUF(mg)
	require.Error(t, err)
	require.True(t, errors.Is(err, ErrFileChanged), "%v", err)
	require.Contains(t, err.Error(), path)
}

// TestOpenLoRAPEFTFault: a PEFT weights file truncated under its mapping gives an error
// wrapping ErrFileChanged, not a crash.
func TestOpenLoRAPEFTFault(t *testing.T) {
	var f []peftFactor
	for l := 0; l < 2; l++ { // large enough that the factors span pages past the cut
		f = append(f, peftPair(l, "mlp.down_proj", 64, 768, 256, "F32")...)
	}
	dir := writePEFT(t, peftConfigJSON(), f)
	cfg := peftConfigJSON()
	cfg["r"] = 64
	b, _ := json.Marshal(cfg)
	require.NoError(t, os.WriteFile(filepath.Join(dir, peftConfigFile), b, 0o644))
	c, targets, err := readPEFTConfig(dir)
	require.NoError(t, err)
	w := filepath.Join(dir, peftWeightsFile)
	st, err := OpenSafetensors(w)
	require.NoError(t, err)
	defer st.Close()
	require.NoError(t, os.Truncate(w, 4096))
	_, err = c.lora(dir, st, targets)
	require.Error(t, err)
	require.True(t, errors.Is(err, ErrFileChanged), "%v", err)
	require.Contains(t, err.Error(), w)
}

// TestLoRACheck: Check refuses targets and shapes the base does not have, naming the adapter's
// tensor and expected vs found; a mismatched architecture is refused.
func TestLoRACheck(t *testing.T) {
	base := tinyBase(t, "")
	for _, c := range []struct {
		name    string
		factors []peftFactor
		msg     string
	}{
		{"layer", peftPair(2, "self_attn.q_proj", 8, 256, 256, "F32"), "tensor base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight adapts layer 2, but the base model " + base.Path + " has 2 layers (0..1)"},
		{"in", peftPair(0, "mlp.down_proj", 8, 256, 256, "F32"), "tensor base_model.model.model.layers.0.mlp.down_proj.lora_A.weight (GGUF shape [256 8]) takes 256 inputs, but the base model's blk.0.ffn_down.weight [768 256] takes 768"},
		{"out", peftPair(0, "self_attn.k_proj", 8, 256, 256, "F32"), "tensor base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight (GGUF shape [8 256]) gives 256 outputs, but the base model's blk.0.attn_k.weight [256 128] gives 128"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := writePEFT(t, peftConfigJSON(), c.factors)
			l, err := OpenLoRA(dir)
			require.NoError(t, err)
			err = l.Check(base)
			require.Error(t, err)
			require.Contains(t, err.Error(), dir+": ")
			require.Contains(t, err.Error(), c.msg)
			require.Equal(t, Arch(""), l.Arch, "a failed Check leaves the adapter unbound")
			require.True(t, l.HFRows)
		})
	}
	g := ggufAdapter(TypeF16)
	g.Meta["general.architecture"] = string(ArchLlama)
	path := writeGGUFTemp(t, g)
	l, err := OpenLoRA(path)
	require.NoError(t, err)
	require.ErrorContains(t, l.Check(base), path+": the adapter is for architecture llama, the base model "+base.Path+" is bitnet-b1.58")
	g.Meta["general.architecture"] = string(ArchBitNet25) // microsoft/BitNet's name for the same layout
	l, err = OpenLoRA(writeGGUFTemp(t, g))
	require.NoError(t, err)
	require.NoError(t, l.Check(base))
	// A failed Check on a llama base permutes nothing: blk.0's Q rows stay in HF order when
	// blk.2 does not fit.
	llama := tinyBase(t, "llama158")
	dir := writePEFT(t, peftConfigJSON(), append(peftPair(0, "self_attn.q_proj", 8, 256, 256, "F32"), peftPair(2, "self_attn.q_proj", 8, 256, 256, "F32")...))
	pl, err := OpenLoRA(dir)
	require.NoError(t, err)
	before := pl.Targets["blk.0.attn_q.weight"].B
	require.ErrorContains(t, pl.Check(llama), "adapts layer 2")
	require.True(t, pl.HFRows)
	require.Same(t, before, pl.Targets["blk.0.attn_q.weight"].B)
	// A GGUF adapter with a base tensor missing from the model.
	delete(base.Tensors, "blk.0.attn_q.weight")
	require.ErrorContains(t, l.Check(base), "tensor blk.0.attn_q.weight.lora_a adapts blk.0.attn_q.weight, which the base model "+base.Path+" does not have as a matrix")
}

// TestLoRACheckPermutesForNormRoPE: on a llama-arch base (NORM RoPE, Q/K rows permuted by the
// converter) Check permutes the rows of B for attn_q and attn_k as PermuteQKNorm does to the
// base's rows, and leaves the other projections alone; on a NEOX base nothing moves. The GGUF
// written after is in the base's order, so it opens unchanged.
func TestLoRACheckPermutesForNormRoPE(t *testing.T) {
	var f []peftFactor
	f = append(f, peftPair(0, "self_attn.q_proj", 8, 256, 256, "F32")...)
	f = append(f, peftPair(1, "self_attn.k_proj", 8, 256, 128, "F32")...)
	f = append(f, peftPair(0, "self_attn.v_proj", 8, 256, 128, "F32")...)
	dir := writePEFT(t, peftConfigJSON(), f)

	neox, err := OpenLoRA(dir)
	require.NoError(t, err)
	orig, err := OpenLoRA(dir)
	require.NoError(t, err)
	require.NoError(t, neox.Check(tinyBase(t, "")))
	require.Equal(t, orig.Targets, neox.Targets)

	llama := tinyBase(t, "llama158")
	require.Equal(t, RoPENorm, llama.Config.RoPEMode)
	l, err := OpenLoRA(dir)
	require.NoError(t, err)
	// Before Check the rows are in HF order, which cannot be written for a llama base.
	l.Arch = ArchLlama
	require.ErrorContains(t, WriteLoRAGGUF(filepath.Join(t.TempDir(), "x.gguf"), l), "target blk.0.attn_q.weight: B rows are in Hugging Face order")
	l.Arch = ""
	require.NoError(t, l.Check(llama))
	require.False(t, l.HFRows)
	require.Equal(t, ArchLlama, l.Arch)
	for name, heads := range map[string]int{"blk.0.attn_q.weight": llama.Config.Heads, "blk.1.attn_k.weight": llama.Config.KVHeads} {
		b := orig.Targets[name].B
		rows := decodeU16(b.Data)
		want, err := PermuteQKNorm(rows, int(b.Shape[1]), int(b.Shape[0]), heads)
		require.NoError(t, err)
		require.Equal(t, want, decodeU16(l.Targets[name].B.Data), name)
		require.NotEqual(t, rows, want)
		require.Equal(t, orig.Targets[name].A, l.Targets[name].A)
	}
	require.Equal(t, orig.Targets["blk.0.attn_v.weight"], l.Targets["blk.0.attn_v.weight"])
	// A second Check does not permute again.
	before := l.Targets["blk.0.attn_q.weight"].B
	require.NoError(t, l.Check(llama))
	require.Equal(t, before, l.Targets["blk.0.attn_q.weight"].B)

	path := filepath.Join(t.TempDir(), "llama.gguf")
	require.NoError(t, WriteLoRAGGUF(path, l))
	back, err := OpenLoRA(path)
	require.NoError(t, err)
	require.NoError(t, back.Check(llama))
	for name, p := range l.Targets {
		require.Equal(t, p.B.Data, back.Targets[name].B.Data, name)
	}
}

// decodeU16 returns little-endian uint16 values.
func decodeU16(b []byte) []uint16 {
	out := make([]uint16, len(b)/2)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return out
}

// TestWriteLoRAGGUFRefusals: an adapter without an architecture, an RSLoRA adapter with several
// ranks, or a bad factor is refused and leaves an existing file untouched.
func TestWriteLoRAGGUFRefusals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "adapter.gguf")
	require.NoError(t, os.WriteFile(path, []byte("keep"), 0o644))
	mk := func() *LoRA {
		cfg := peftConfigJSON()
		cfg["rank_pattern"] = map[string]any{"v_proj": 4}
		var f []peftFactor
		f = append(f, peftPair(0, "self_attn.q_proj", 8, 256, 256, "F32")...)
		f = append(f, peftPair(0, "self_attn.v_proj", 4, 256, 128, "F32")...)
		l, err := OpenLoRA(writePEFT(t, cfg, f))
		require.NoError(t, err)
		l.Arch = ArchBitNetB158
		return l
	}
	for _, c := range []struct {
		name string
		edit func(*LoRA)
		msg  string
	}{
		{"arch", func(l *LoRA) { l.Arch = "" }, "the adapter has no architecture"},
		{"rslora ranks", func(l *LoRA) { l.RSLoRA = true }, "target blk.0.attn_v.weight has rank 4, others 8: an RSLoRA adapter with several ranks has no single adapter.lora.alpha"},
		{"target", func(l *LoRA) { l.Targets["output.weight"] = l.Targets["blk.0.attn_q.weight"] }, "target output.weight is not one of the projections"},
		{"type", func(l *LoRA) {
			p := l.Targets["blk.0.attn_q.weight"]
			a := *p.A
			a.Type = TypeBF16
			p.A = &a
			l.Targets["blk.0.attn_q.weight"] = p
		}, "want a 2-D F16 tensor"},
		{"size", func(l *LoRA) {
			p := l.Targets["blk.0.attn_q.weight"]
			b := *p.B
			b.Data = b.Data[:10]
			p.B = &b
			l.Targets["blk.0.attn_q.weight"] = p
		}, "holds 10 bytes, want 4096"},
		{"empty", func(l *LoRA) { l.Targets = nil }, "the adapter has no targets"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := mk()
			c.edit(l)
			err := WriteLoRAGGUF(path, l)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.msg)
			b, _ := os.ReadFile(path)
			require.Equal(t, "keep", string(b))
			entries, _ := os.ReadDir(filepath.Dir(path))
			require.Len(t, entries, 1, "no temporary file is left")
		})
	}
	// A plain adapter with two ranks is fine: llama.cpp divides by each pair's rank.
	l := mk()
	require.NoError(t, WriteLoRAGGUF(path, l))
	back, err := OpenLoRA(path)
	require.NoError(t, err)
	require.Equal(t, l.Scaling(l.Targets["blk.0.attn_v.weight"], 1), back.Scaling(back.Targets["blk.0.attn_v.weight"], 1))
	require.Equal(t, float32(4), back.Scaling(back.Targets["blk.0.attn_v.weight"], 1))
}

// TestSortedLoRATargets: targets are ordered as the base model's tensors: by layer number, then
// in LoRAProjections order.
func TestSortedLoRATargets(t *testing.T) {
	m := map[string]int{"blk.10.attn_q.weight": 0, "blk.2.ffn_down.weight": 0, "blk.2.attn_q.weight": 0, "blk.1.attn_output.weight": 0, "blk.2.ffn_gate.weight": 0}
	require.Equal(t, []string{"blk.1.attn_output.weight", "blk.2.attn_q.weight", "blk.2.ffn_gate.weight", "blk.2.ffn_down.weight", "blk.10.attn_q.weight"}, sortedLoRATargets(m))
}

// TestParseLoRATarget covers the names an adapter may target.
func TestParseLoRATarget(t *testing.T) {
	layer, proj, ok := ParseLoRATarget("blk.12.ffn_down.weight")
	require.True(t, ok)
	require.Equal(t, 12, layer)
	require.Equal(t, "ffn_down", proj)
	for _, n := range []string{"token_embd.weight", "output.weight", "blk.0.attn_norm.weight", "blk.01.attn_q.weight",
		"blk.-1.attn_q.weight", "blk.+1.attn_q.weight", "blk.x.attn_q.weight", "blk.0.attn_q.bias", "blk.0.attn_q", "blk.0"} {
		_, _, ok := ParseLoRATarget(n)
		require.False(t, ok, n)
	}
}
