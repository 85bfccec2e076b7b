package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// GGUF metadata of llama.cpp LoRA adapters: the keys convert_lora_to_gguf.py writes (gguf-py
// constants.py Keys.General.TYPE and Keys.Adapter) and src/llama-adapter.cpp
// (llama_adapter_lora_init_impl) reads.
const (
	// KeyGeneralType is "adapter" in an adapter file (a model has "model" or no such key).
	KeyGeneralType = "general.type"
	// KeyAdapterType is "lora" in a LoRA adapter.
	KeyAdapterType = "adapter.type"
	// KeyLoRAAlpha is the adapter's alpha, a float32; absent or 0 means the rank (scaling 1).
	// llama.cpp scales every pair by alpha/rank, with rank the pair's own.
	KeyLoRAAlpha = "adapter.lora.alpha"
	// KeyALoRAInvocationTokens marks an activated LoRA (applied only after its invocation
	// tokens); bitgpu refuses such adapters.
	KeyALoRAInvocationTokens = "adapter.alora.invocation_tokens"
	// KeyLoRARSLoRA (bool) and KeyLoRAPEFTAlpha (float32) are bitgpu's own keys, written by
	// WriteLoRAGGUF for an RSLoRA adapter: llama.cpp, which ignores them, scales by
	// adapter.lora.alpha/rank, so adapter.lora.alpha holds lora_alpha·sqrt(rank) rounded to
	// float32; bitgpu reads lora_alpha and the flag back so its scaling is PEFT's bit for bit.
	KeyLoRARSLoRA    = "bitgpu.lora.rslora"
	KeyLoRAPEFTAlpha = "bitgpu.lora.alpha"
)

// LoRA tensor name suffixes in GGUF adapters: "<base tensor name>.lora_a" holds A ([in, rank]
// in GGUF order) and ".lora_b" holds B ([rank, out]).
const (
	loraSuffixA = ".lora_a"
	loraSuffixB = ".lora_b"
)

// OpenLoRA reads a LoRA adapter: a llama.cpp GGUF adapter file (LoRAFromGGUF says what it
// reads and refuses) or a PEFT directory holding adapter_config.json and
// adapter_model.safetensors (either file of it may be named instead). The factors are copied
// out of the file as F16 (F32 and BF16 rounded to nearest even), so nothing stays mapped and the
// LoRA needs no Close. Errors name the file and the key, field or tensor at fault.
//
// A PEFT directory (peft's save_pretrained; LoraConfig fields in adapter_config.json) gives
// Alpha = lora_alpha (default 8), RSLoRA = use_rslora, Name = the directory's base name, an
// empty Arch and HFRows set (Check binds both to the base). Its factors are
// base_model.model.model.layers.N.self_attn.{q,k,v,o}_proj.lora_A.weight [r, in] and
// .lora_B.weight [out, r] in PyTorch order — the same bytes as GGUF [in, r] and [r, out] — and
// likewise mlp.{gate,up,down}_proj, in F32, F16 or BF16. Each pair's rank must be r (default 8)
// or the rank_pattern value for its module, matched as PEFT's get_pattern_key does (the pattern
// matches the whole module key "model.layers.N.self_attn.q_proj" or a dotted suffix of it).
// Refused: peft_type other than LORA, r or lora_alpha not positive, use_dora, fan_in_fan_out,
// bias other than "none", lora_bias, use_qalora, a non-empty modules_to_save,
// layer_replication, trainable_token_indices, target_parameters or alora_invocation_tokens,
// target_modules that can name anything but the seven projections (embed_tokens, lm_head) or
// that does not name a module the weights adapt, an alpha_pattern that gives a module another
// alpha than lora_alpha (one alpha per adapter, as llama.cpp's format holds), rank_pattern or
// alpha_pattern keys that are not valid (RE2) patterns or that match one module with different
// values, a tensor that is not one of the factors above, A without B, shapes that are not 2-D,
// disagree between A and B or with the configured rank, values that are not finite or overflow
// f16, bad JSON or safetensors, and adapter_model.bin (a pickle, never read).
func OpenLoRA(path string) (*LoRA, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return openPEFT(path)
	}
	if b := filepath.Base(path); b == peftConfigFile || b == peftWeightsFile {
		return openPEFT(filepath.Dir(path))
	}
	g, err := OpenGGUF(path)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	return LoRAFromGGUF(g)
}

// LoRAFromGGUF reads the LoRA adapter held in a parsed GGUF file (g.Path names it in errors) the
// way llama.cpp's llama_adapter_lora_init_impl does: general.type "adapter", adapter.type
// "lora", general.architecture (kept in Arch; Check compares it with the base's),
// adapter.lora.alpha (float32, absent means 0) and tensor pairs "<base>.lora_a" [in, r] and
// "<base>.lora_b" [r, out] of type F16, F32 or BF16, where base is one of the seven projections
// "blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}.weight" (LoRAProjections).
// The factors are copied out of g as F16, so g may be closed after.
//
// Refused, with an error naming the key or tensor: another general.type or adapter.type, a
// missing architecture, an alpha that is not a finite float32, an activated LoRA
// (adapter.alora.invocation_tokens), a tensor that is not a LoRA factor (llama.cpp skips
// "*_norm.weight" vectors; bitgpu cannot apply them and refuses), a target outside the seven
// projections (token_embd, output), A without B or B without A, factors that are not 2-D or
// whose ranks differ, another tensor type, and a value that is not finite or overflows f16.
// A memory fault while copying (the file truncated under the mapping) is an error wrapping
// ErrFileChanged.
func LoRAFromGGUF(g *GGUF) (*LoRA, error) {
	var l *LoRA
	err := CatchFault(func() (err error) {
		l, err = loraFromGGUF(g)
		return err
	})
	return l, err
}

// loraFromGGUF is LoRAFromGGUF without the fault guard.
func loraFromGGUF(g *GGUF) (*LoRA, error) {
	file := g.Path
	str := func(key string) (string, error) {
		v, ok := g.Meta[key]
		if !ok && key == KeyGeneralType {
			return "", fmt.Errorf("%s: no %s key: not a llama.cpp LoRA adapter (want %s = \"adapter\", %s = \"lora\")", file, key, KeyGeneralType, KeyAdapterType)
		}
		if !ok {
			return "", fmt.Errorf("%s: no %s key (llama.cpp LoRA adapters have it)", file, key)
		}
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf("%s: key %s is a %s, want a string", file, key, ggufTypeName(v))
		}
		return s, nil
	}
	typ, err := str(KeyGeneralType)
	if err != nil {
		return nil, err
	}
	if typ != "adapter" {
		return nil, fmt.Errorf("%s: %s = %q, want \"adapter\": not a LoRA adapter", file, KeyGeneralType, typ)
	}
	atyp, err := str(KeyAdapterType)
	if err != nil {
		return nil, err
	}
	if atyp != "lora" {
		return nil, fmt.Errorf("%s: %s = %q, want \"lora\": only LoRA adapters are supported", file, KeyAdapterType, atyp)
	}
	arch, err := str(keyArch)
	if err != nil {
		return nil, err
	}
	if arch == "" {
		return nil, fmt.Errorf("%s: %s is empty: the adapter must name its base architecture", file, keyArch)
	}
	if _, ok := g.Meta[KeyALoRAInvocationTokens]; ok {
		return nil, fmt.Errorf("%s: key %s: activated LoRA (aLoRA) adapters are not supported", file, KeyALoRAInvocationTokens)
	}
	alpha, _, err := ggufF32(g, KeyLoRAAlpha)
	if err != nil {
		return nil, err
	}
	l := &LoRA{Path: file, Alpha: alpha, Arch: Arch(arch), Targets: map[string]LoRAPair{}, src: map[string][2]string{}}
	if name, ok := g.Meta["general.name"].(string); ok {
		l.Name = name
	}
	if v, ok := g.Meta[KeyLoRARSLoRA]; ok {
		rs, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%s: key %s is a %s, want a bool", file, KeyLoRARSLoRA, ggufTypeName(v))
		}
		l.RSLoRA = rs
	}
	peftAlpha, hasPEFTAlpha, err := ggufF32(g, KeyLoRAPEFTAlpha)
	if err != nil {
		return nil, err
	}
	if l.RSLoRA {
		if !hasPEFTAlpha || !(peftAlpha > 0) {
			return nil, fmt.Errorf("%s: %s is true but %s is missing or not positive", file, KeyLoRARSLoRA, KeyLoRAPEFTAlpha)
		}
		l.Alpha = peftAlpha
	}

	type half struct{ a, b *Tensor }
	pairs := map[string]*half{}
	for _, t := range g.Tensors {
		base, isA := strings.CutSuffix(t.Name, loraSuffixA)
		isB := false
		if !isA {
			base, isB = strings.CutSuffix(t.Name, loraSuffixB)
		}
		switch {
		case !isA && !isB && strings.HasSuffix(t.Name, "_norm.weight"):
			return nil, fmt.Errorf("%s: tensor %s: norm weights in an adapter are not supported (only %s/%s factors)", file, t.Name, loraSuffixA, loraSuffixB)
		case !isA && !isB:
			return nil, fmt.Errorf("%s: tensor %s is not a LoRA factor (want <base tensor>%s or %s)", file, t.Name, loraSuffixA, loraSuffixB)
		}
		if _, _, ok := ParseLoRATarget(base); !ok {
			return nil, fmt.Errorf("%s: tensor %s adapts %s, which is not one of the projections %s", file, t.Name, base, loraTargetsHelp)
		}
		h := pairs[base]
		if h == nil {
			h = &half{}
			pairs[base] = h
		}
		if isA {
			h.a = t
		} else {
			h.b = t
		}
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("%s: the adapter has no %s/%s tensors", file, loraSuffixA, loraSuffixB)
	}
	for _, base := range sortedLoRATargets(pairs) {
		h := pairs[base]
		na, nb := base+loraSuffixA, base+loraSuffixB
		if h.a == nil || h.b == nil {
			have, miss := na, nb
			if h.a == nil {
				have, miss = nb, na
			}
			return nil, fmt.Errorf("%s: tensor %s has no partner %s", file, have, miss)
		}
		if len(h.a.Shape) != 2 || len(h.b.Shape) != 2 {
			return nil, fmt.Errorf("%s: tensors %s %v and %s %v: want 2-D factors [in, rank] and [rank, out]", file, na, h.a.Shape, nb, h.b.Shape)
		}
		if h.a.Shape[1] != h.b.Shape[0] {
			return nil, fmt.Errorf("%s: tensor %s has rank %d (shape %v) but %s has rank %d (shape %v)", file, na, h.a.Shape[1], h.a.Shape, nb, h.b.Shape[0], h.b.Shape)
		}
		a, err := loraFactorF16(file, na, h.a.Type.String(), h.a.Data, h.a.Shape)
		if err != nil {
			return nil, err
		}
		b, err := loraFactorF16(file, nb, h.b.Type.String(), h.b.Data, h.b.Shape)
		if err != nil {
			return nil, err
		}
		p := LoRAPair{A: a, B: b}
		if l.RSLoRA {
			if want := float32(float64(l.Alpha) * math.Sqrt(float64(p.Rank()))); want != alpha {
				return nil, fmt.Errorf("%s: %s = %g disagrees with %s = %g and %s of rank %d (want %g = alpha·sqrt(rank))",
					file, KeyLoRAAlpha, alpha, KeyLoRAPEFTAlpha, l.Alpha, base, p.Rank(), want)
			}
		}
		l.Targets[base] = p
		l.src[base] = [2]string{na, nb}
	}
	return l, nil
}

// ggufF32 returns the float32 value of key (0, false when absent); another type, NaN or Inf is
// an error naming the key. llama.cpp reads these keys with gguf_get_val_f32, which needs FLOAT32.
func ggufF32(g *GGUF, key string) (float32, bool, error) {
	v, ok := g.Meta[key]
	if !ok {
		return 0, false, nil
	}
	f, ok := v.(float32)
	if !ok {
		return 0, false, fmt.Errorf("%s: key %s is a %s, want a float32", g.Path, key, ggufTypeName(v))
	}
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return 0, false, fmt.Errorf("%s: key %s = %g, want a finite value", g.Path, key, f)
	}
	return f, true, nil
}

// ggufTypeName names the GGUF type of a metadata value for errors ("uint32", "array", ...).
func ggufTypeName(v any) string {
	switch v.(type) {
	case uint8, int8, uint16, int16, uint32, int32, uint64, int64, float32, float64, bool, string:
		return fmt.Sprintf("%T", v)
	}
	return "array"
}

// loraTargetsHelp lists the projections an adapter may target, for errors.
const loraTargetsHelp = "blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}.weight"

// ParseLoRATarget splits a base tensor name an adapter may target,
// "blk.N.<projection>.weight" with N a decimal layer index without sign or leading zeros and
// projection one of LoRAProjections' GGUF names, into the layer and the projection; ok is false
// for any other name (token_embd.weight, output.weight, norms, "blk.01.attn_q.weight").
func ParseLoRATarget(name string) (layer int, proj string, ok bool) {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return 0, "", false
	}
	num, rest, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, "", false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || strconv.Itoa(n) != num {
		return 0, "", false
	}
	proj, ok = strings.CutSuffix(rest, ".weight")
	if !ok || loraProjIndex(proj) < 0 {
		return 0, "", false
	}
	return n, proj, true
}

// loraProjIndex is proj's index in LoRAProjections (by GGUF name), or -1.
func loraProjIndex(proj string) int {
	for i, p := range LoRAProjections {
		if p.GGUF == proj {
			return i
		}
	}
	return -1
}

// sortedLoRATargets returns the keys of m (valid target names) by layer, then in
// LoRAProjections order, the order the base model's tensors have.
func sortedLoRATargets[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		li, pi, _ := ParseLoRATarget(names[i])
		lj, pj, _ := ParseLoRATarget(names[j])
		if li != lj {
			return li < lj
		}
		if xi, xj := loraProjIndex(pi), loraProjIndex(pj); xi != xj {
			return xi < xj
		}
		return names[i] < names[j]
	})
	return names
}

// loraFactorF16 copies one LoRA factor of the given dtype ("F16", "F32" or "BF16", as
// TensorType.String and safetensors spell them) and GGUF shape out of data into a new F16
// tensor named name, rounding F32 and BF16 to nearest even. A NaN or Inf, or a finite value
// beyond the f16 range (|x| >= 65520 rounds to Inf), is an error naming file, tensor and
// element (index in storage order, and its row and column: row k holds Shape[0] values).
func loraFactorF16(file, name, dtype string, data []byte, shape []uint64) (*Tensor, error) {
	n := 1
	for _, d := range shape {
		if d == 0 || d > 1<<40 || uint64(n) > (1<<40)/d {
			return nil, fmt.Errorf("%s: tensor %s: bad shape %v", file, name, shape)
		}
		n *= int(d)
	}
	var elem int
	switch dtype {
	case "F16", "BF16":
		elem = 2
	case "F32":
		elem = 4
	default:
		return nil, fmt.Errorf("%s: tensor %s has type %s, want F16, F32 or BF16", file, name, dtype)
	}
	if len(data) != n*elem {
		return nil, fmt.Errorf("%s: tensor %s: %s %v needs %d bytes, found %d", file, name, dtype, shape, n*elem, len(data))
	}
	out := make([]byte, 2*n)
	cols := int(shape[0])
	for i := 0; i < n; i++ {
		var h uint16
		var f float32
		switch dtype {
		case "F16":
			h = binary.LittleEndian.Uint16(data[2*i:])
			f = F16ToF32(h)
		case "BF16":
			f = BF16ToF32(binary.LittleEndian.Uint16(data[2*i:]))
			h = F32ToF16(f)
		default:
			f = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
			h = F32ToF16(f)
		}
		if h&0x7c00 == 0x7c00 { // f16 Inf or NaN
			what := "is not finite"
			if !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) {
				what = "overflows f16 (largest 65504)"
			}
			return nil, fmt.Errorf("%s: tensor %s: element %d (row %d, column %d) = %g %s", file, name, i, i/cols, i%cols, f, what)
		}
		binary.LittleEndian.PutUint16(out[2*i:], h)
	}
	return &Tensor{Name: name, Type: TypeF16, Shape: append([]uint64(nil), shape...), Data: out}, nil
}

// WriteLoRAGGUF writes l to path as a llama.cpp GGUF LoRA adapter (what convert_lora_to_gguf.py
// writes and llama_adapter_lora_init_impl reads): general.architecture = l.Arch (llama.cpp
// refuses an adapter whose architecture is not its base's, so it must be set: Check sets it from
// the base, or the caller sets it), general.type "adapter", general.name (when l.Name is set),
// adapter.type "lora", adapter.lora.alpha, then per target in base order (layer, then
// LoRAProjections order) "<base>.lora_a" [in, r] and "<base>.lora_b" [r, out] as F16. The file
// is written through a temporary file renamed into place, so an error leaves nothing at path.
//
// llama.cpp scales every pair by adapter.lora.alpha/rank. For a plain adapter that is l.Alpha;
// an RSLoRA adapter (scaling alpha/sqrt(rank)) gets alpha·sqrt(rank) rounded to float32, and
// bitgpu's own keys bitgpu.lora.rslora and bitgpu.lora.alpha so OpenLoRA restores l exactly; all
// its pairs must then have one rank. Errors name the tensor: an empty Arch or adapter, a target
// that is not one of the seven projections, factors that are not 2-D F16 of matching rank, an
// RSLoRA adapter with two ranks, and B rows still in Hugging Face order (HFRows) for attn_q or
// attn_k of a NORM-RoPE architecture (llama), which need Check against the base first.
func WriteLoRAGGUF(path string, l *LoRA) error {
	g, err := loraToGGUF(l)
	if err != nil {
		return err
	}
	return WriteGGUFFile(path, g)
}

// loraToGGUF lays l out as the GGUF WriteLoRAGGUF writes (the tensors alias l's).
func loraToGGUF(l *LoRA) (*GGUF, error) {
	if l.Arch == "" {
		return nil, fmt.Errorf("%s: the adapter has no architecture: general.architecture must be the base model's (check it against the base, or name the architecture)", l.Path)
	}
	if len(l.Targets) == 0 {
		return nil, fmt.Errorf("%s: the adapter has no targets", l.Path)
	}
	g := &GGUF{Version: 3}
	g.Set(keyArch, string(l.Arch))
	g.Set(KeyGeneralType, "adapter")
	if l.Name != "" {
		g.Set("general.name", l.Name)
	}
	g.Set(KeyAdapterType, "lora")
	alpha := l.Alpha
	rank := 0
	for _, base := range sortedLoRATargets(l.Targets) {
		p := l.Targets[base]
		_, proj, ok := ParseLoRATarget(base)
		if !ok {
			return nil, fmt.Errorf("%s: target %s is not one of the projections %s", l.Path, base, loraTargetsHelp)
		}
		if err := checkPairLayout(l.Path, base, p); err != nil {
			return nil, err
		}
		if l.HFRows && l.Arch == ArchLlama && (proj == "attn_q" || proj == "attn_k") {
			return nil, fmt.Errorf("%s: target %s: B rows are in Hugging Face order, but architecture %s permutes Q/K rows for NORM RoPE: check the adapter against the base model first", l.Path, base, l.Arch)
		}
		if l.RSLoRA {
			r := p.Rank()
			if rank != 0 && r != rank {
				return nil, fmt.Errorf("%s: target %s has rank %d, others %d: an RSLoRA adapter with several ranks has no single %s", l.Path, base, r, rank, KeyLoRAAlpha)
			}
			rank = r
		}
		a, b := *p.A, *p.B
		a.Name, b.Name = base+loraSuffixA, base+loraSuffixB
		g.Tensors = append(g.Tensors, &a, &b)
	}
	peftAlpha := l.Alpha
	if l.RSLoRA {
		if peftAlpha == 0 { // Scaling reads 0 as the rank
			peftAlpha = float32(rank)
		}
		alpha = float32(float64(peftAlpha) * math.Sqrt(float64(rank)))
	}
	g.Set(KeyLoRAAlpha, alpha)
	if l.RSLoRA {
		g.Set(KeyLoRARSLoRA, true)
		g.Set(KeyLoRAPEFTAlpha, peftAlpha)
	}
	return g, nil
}

// checkPairLayout checks that p's factors are 2-D F16 tensors A [in, r] and B [r, out] whose
// data has the size their shapes need; errors name file and target.
func checkPairLayout(file, base string, p LoRAPair) error {
	if p.A == nil || p.B == nil {
		return fmt.Errorf("%s: target %s lacks a factor", file, base)
	}
	for _, t := range []*Tensor{p.A, p.B} {
		if len(t.Shape) != 2 || t.Type != TypeF16 {
			return fmt.Errorf("%s: target %s: factor %s is %s %v, want a 2-D F16 tensor", file, base, t.Name, t.Type, t.Shape)
		}
		size, err := TensorBytes(t.Type, t.Shape)
		if err != nil || uint64(len(t.Data)) != size {
			return fmt.Errorf("%s: target %s: factor %s %v holds %d bytes, want %d", file, base, t.Name, t.Shape, len(t.Data), size)
		}
	}
	if p.A.Shape[1] != p.B.Shape[0] {
		return fmt.Errorf("%s: target %s: A %v has rank %d, B %v has rank %d", file, base, p.A.Shape, p.A.Shape[1], p.B.Shape, p.B.Shape[0])
	}
	return nil
}
