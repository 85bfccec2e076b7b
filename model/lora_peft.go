package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/bitgpu/bitgpu/internal/fsutil"
)

// The files of a PEFT LoRA directory (peft's PeftModel.save_pretrained with safe_serialization).
const (
	peftConfigFile  = "adapter_config.json"
	peftWeightsFile = "adapter_model.safetensors"
	peftPickleFile  = "adapter_model.bin"
)

// peftConfig is the part of PEFT's adapter_config.json (peft/tuners/lora/config.py LoraConfig)
// that decides what an adapter computes. Pointers and raw values tell absent from set.
type peftConfig struct {
	PEFTType      string          `json:"peft_type"`
	R             *int            `json:"r"`
	LoRAAlpha     *float64        `json:"lora_alpha"`
	TargetModules json.RawMessage `json:"target_modules"`
	UseRSLoRA     bool            `json:"use_rslora"`
	FanInFanOut   bool            `json:"fan_in_fan_out"`
	Bias          *string         `json:"bias"`
	UseDoRA       bool            `json:"use_dora"`
	LoRABias      bool            `json:"lora_bias"`
	UseQALoRA     bool            `json:"use_qalora"`
	RankPattern   map[string]int  `json:"rank_pattern"`
	// AlphaPattern maps module patterns to alphas (ints or floats in the file).
	AlphaPattern          map[string]float64 `json:"alpha_pattern"`
	ModulesToSave         json.RawMessage    `json:"modules_to_save"`
	LayerReplication      json.RawMessage    `json:"layer_replication"`
	TrainableTokenIndices json.RawMessage    `json:"trainable_token_indices"`
	TargetParameters      json.RawMessage    `json:"target_parameters"`
	ALoRAInvocationTokens json.RawMessage    `json:"alora_invocation_tokens"`
}

// PEFT's LoraConfig defaults for r and lora_alpha when adapter_config.json omits them.
const (
	peftDefaultR     = 8
	peftDefaultAlpha = 8
)

// peftTensorName matches the names PEFT saves the factors of a Llama-style decoder layer's
// projection under: base_model.model.model.layers.N.<parent>.<module>.lora_<A|B>.weight.
var peftTensorName = regexp.MustCompile(`^base_model\.model\.model\.layers\.([0-9]+)\.(self_attn|mlp)\.([a-z_]+)\.lora_([AB])\.weight$`)

// peftModules maps the transformers module path under model.layers.N (hfLayerNames) of each
// projection to its GGUF name.
var peftModules = func() map[string]string {
	m := map[string]string{}
	for _, p := range LoRAProjections {
		m[hfLayerNames[p.GGUF]] = p.GGUF
	}
	return m
}()

// isNull reports whether a raw JSON value is absent, null or an empty list, object or string.
func isNull(raw json.RawMessage) bool {
	switch strings.TrimSpace(string(raw)) {
	case "", "null", "[]", "{}", `""`:
		return true
	}
	return false
}

// openPEFT reads the PEFT LoRA directory dir as OpenLoRA describes.
func openPEFT(dir string) (*LoRA, error) {
	c, targets, err := readPEFTConfig(dir)
	if err != nil {
		return nil, err
	}
	wPath := filepath.Join(dir, peftWeightsFile)
	if _, err := os.Stat(wPath); errors.Is(err, fs.ErrNotExist) {
		if _, err2 := os.Stat(filepath.Join(dir, peftPickleFile)); err2 == nil {
			return nil, fmt.Errorf("%s: no %s; %s (a PyTorch pickle) is not read: save the adapter with safe_serialization=True", dir, peftWeightsFile, peftPickleFile)
		}
		return nil, fmt.Errorf("%s: no %s", dir, peftWeightsFile)
	}
	st, err := OpenSafetensors(wPath)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return c.lora(dir, st, targets)
}

// readPEFTConfig reads and checks dir's adapter_config.json (peftConfig.check) and returns it
// with its target_modules test (peftConfig.targetMatcher).
func readPEFTConfig(dir string) (*peftConfig, func(string) bool, error) {
	cfgPath := filepath.Join(dir, peftConfigFile)
	raw, err := fsutil.ReadRegular(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	var c peftConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&c); err != nil {
		return nil, nil, fmt.Errorf("%s: %v", cfgPath, err)
	}
	if err := c.check(cfgPath); err != nil {
		return nil, nil, err
	}
	targets, err := c.targetMatcher(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	return &c, targets, nil
}

// lora builds the LoRA of directory dir from its checked config c and its opened weights st,
// copying the factors out of the mapping under CatchFault (a file truncated under the mapping
// gives an error wrapping ErrFileChanged).
func (c *peftConfig) lora(dir string, st *Safetensors, targets func(string) bool) (*LoRA, error) {
	l := &LoRA{Path: dir, Name: filepath.Base(filepath.Clean(dir)), Alpha: float32(*c.LoRAAlpha), RSLoRA: c.UseRSLoRA,
		HFRows: true, Targets: map[string]LoRAPair{}, src: map[string][2]string{}}
	err := CatchFault(func() error { return c.readFactors(l, st, st.Path, targets) })
	if err != nil {
		return nil, err
	}
	return l, nil
}

// check refuses the adapter_config.json settings bitgpu cannot honour and fills the defaults
// of r and lora_alpha.
func (c *peftConfig) check(file string) error {
	if c.PEFTType != "" && c.PEFTType != "LORA" {
		return fmt.Errorf("%s: peft_type = %q: only LORA adapters are supported", file, c.PEFTType)
	}
	if c.R == nil {
		c.R = new(int)
		*c.R = peftDefaultR
	}
	if *c.R <= 0 {
		return fmt.Errorf("%s: r = %d, want a positive rank", file, *c.R)
	}
	if c.LoRAAlpha == nil {
		c.LoRAAlpha = new(float64)
		*c.LoRAAlpha = peftDefaultAlpha
	}
	if a := *c.LoRAAlpha; !(a > 0) || math.IsInf(a, 0) || a > math.MaxFloat32 {
		return fmt.Errorf("%s: lora_alpha = %g, want a positive finite number", file, a)
	}
	for _, f := range []struct {
		key string
		on  bool
		why string
	}{
		{"use_dora", c.UseDoRA, "DoRA adapters are not supported"},
		{"fan_in_fan_out", c.FanInFanOut, "transposed (Conv1D-style) factors are not supported"},
		{"lora_bias", c.LoRABias, "a bias on lora_B is not supported"},
		{"use_qalora", c.UseQALoRA, "QALoRA input pooling is not supported"},
	} {
		if f.on {
			return fmt.Errorf("%s: %s = true: %s", file, f.key, f.why)
		}
	}
	if c.Bias != nil && *c.Bias != "none" {
		return fmt.Errorf("%s: bias = %q: trained biases are not supported (want \"none\")", file, *c.Bias)
	}
	for _, f := range []struct {
		key string
		raw json.RawMessage
		why string
	}{
		{"modules_to_save", c.ModulesToSave, "fully trained modules are not supported"},
		{"layer_replication", c.LayerReplication, "layer replication changes the base model"},
		{"trainable_token_indices", c.TrainableTokenIndices, "trained embedding rows are not supported"},
		{"target_parameters", c.TargetParameters, "parameter targets are not supported"},
		{"alora_invocation_tokens", c.ALoRAInvocationTokens, "activated LoRA (aLoRA) adapters are not supported"},
	} {
		if !isNull(f.raw) {
			return fmt.Errorf("%s: %s = %s: %s", file, f.key, compactJSON(f.raw), f.why)
		}
	}
	return nil
}

// compactJSON returns raw on one line, shortened to 80 bytes, for errors.
func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		b.Reset()
		b.Write(raw)
	}
	s := b.String()
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// targetMatcher checks target_modules and returns the test PEFT applies to a module key
// ("model.layers.0.self_attn.q_proj"; peft/tuners/tuners_utils.py check_target_module_exists):
// a list entry matches the key or a dotted suffix of it, a string must match the whole key as a
// regular expression, "all-linear" matches every projection, and absent matches all. A list
// entry that is not one of the seven projections, or a string that can match embed_tokens or
// lm_head, is refused.
func (c *peftConfig) targetMatcher(file string) (func(key string) bool, error) {
	if isNull(c.TargetModules) {
		return func(string) bool { return true }, nil
	}
	var list []string
	if err := json.Unmarshal(c.TargetModules, &list); err == nil {
		for _, e := range list {
			last := e[strings.LastIndex(e, ".")+1:]
			ok := false
			for _, p := range LoRAProjections {
				ok = ok || p.HF == last
			}
			if !ok {
				return nil, fmt.Errorf("%s: target_modules entry %q is not one of the projections q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj", file, e)
			}
		}
		return func(key string) bool {
			for _, e := range list {
				if key == e || strings.HasSuffix(key, "."+e) {
					return true
				}
			}
			return false
		}, nil
	}
	var s string
	if err := json.Unmarshal(c.TargetModules, &s); err != nil {
		return nil, fmt.Errorf("%s: target_modules = %s, want a list of module names or a regular expression", file, compactJSON(c.TargetModules))
	}
	if s == "all-linear" {
		return func(string) bool { return true }, nil
	}
	re, err := regexp.Compile(`^(?:` + s + `)$`)
	if err != nil {
		return nil, fmt.Errorf("%s: target_modules = %q is not a regular expression bitgpu can read: %v", file, s, err)
	}
	for _, k := range []string{"model.embed_tokens", "lm_head"} {
		if re.MatchString(k) {
			return nil, fmt.Errorf("%s: target_modules = %q matches %s: only the seven projections can be adapted", file, s, k)
		}
	}
	return re.MatchString, nil
}

// patternValue returns the value of the pattern in patterns that matches key the way PEFT's
// get_pattern_key does (the pattern matches the whole key or a dotted suffix of it), and
// whether one did. Patterns that are not valid regular expressions, or two matching patterns
// with different values, are errors naming field and patterns.
func patternValue[V comparable](file, field string, patterns map[string]V, key string) (V, bool, error) {
	var zero V
	keys := make([]string, 0, len(patterns))
	for k := range patterns {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	found := ""
	var val V
	for _, k := range keys {
		re, err := regexp.Compile(`^(?:.*\.)?(?:` + k + `)$`)
		if err != nil {
			return zero, false, fmt.Errorf("%s: %s key %q is not a pattern bitgpu can read: %v", file, field, k, err)
		}
		if !re.MatchString(key) {
			continue
		}
		if found != "" && patterns[k] != val {
			return zero, false, fmt.Errorf("%s: %s keys %q and %q both match module %s with different values", file, field, found, k, key)
		}
		found, val = k, patterns[k]
	}
	return val, found != "", nil
}

// readFactors fills l.Targets from the safetensors file st (named wPath) under the rules of
// openPEFT; the factors are copied out of the mapping.
func (c *peftConfig) readFactors(l *LoRA, st *Safetensors, wPath string, targets func(string) bool) error {
	type half struct{ a, b *SafetensorsTensor }
	pairs := map[string]*half{}
	modules := map[string]string{}
	names := make([]string, 0, len(st.Tensors))
	for n := range st.Tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		m := peftTensorName.FindStringSubmatch(n)
		if m == nil {
			return fmt.Errorf("%s: tensor %s is not a LoRA factor of a projection (want base_model.model.model.layers.N.{self_attn.{q,k,v,o}_proj,mlp.{gate,up,down}_proj}.lora_{A,B}.weight)%s", wPath, n, peftNameHint(n))
		}
		layer, err := strconv.Atoi(m[1])
		if err != nil || strconv.Itoa(layer) != m[1] {
			return fmt.Errorf("%s: tensor %s: layer index %q is not canonical", wPath, n, m[1])
		}
		proj, ok := peftModules[m[2]+"."+m[3]]
		if !ok {
			return fmt.Errorf("%s: tensor %s: %s.%s is not one of the seven projections", wPath, n, m[2], m[3])
		}
		key := "model.layers." + m[1] + "." + m[2] + "." + m[3]
		if !targets(key) {
			return fmt.Errorf("%s: tensor %s adapts %s, which target_modules does not name", wPath, n, key)
		}
		base := "blk." + m[1] + "." + proj + ".weight"
		h := pairs[base]
		if h == nil {
			h = &half{}
			pairs[base] = h
			modules[base] = key
		}
		if m[4] == "A" {
			h.a = st.Tensors[n]
		} else {
			h.b = st.Tensors[n]
		}
	}
	if len(pairs) == 0 {
		return fmt.Errorf("%s: no LoRA factors", wPath)
	}
	for _, base := range sortedLoRATargets(pairs) {
		h, key := pairs[base], modules[base]
		na, nb := "base_model.model."+key+".lora_A.weight", "base_model.model."+key+".lora_B.weight"
		if h.a == nil || h.b == nil {
			have, miss := na, nb
			if h.a == nil {
				have, miss = nb, na
			}
			return fmt.Errorf("%s: tensor %s has no partner %s", wPath, have, miss)
		}
		if len(h.a.Shape) != 2 || len(h.b.Shape) != 2 {
			return fmt.Errorf("%s: tensors %s %v and %s %v: want 2-D factors [r, in] and [out, r]", wPath, na, h.a.Shape, nb, h.b.Shape)
		}
		r := h.a.Shape[0]
		if h.b.Shape[1] != r {
			return fmt.Errorf("%s: tensor %s has rank %d (shape %v) but %s has rank %d (shape %v)", wPath, na, r, h.a.Shape, nb, h.b.Shape[1], h.b.Shape)
		}
		want, fromPattern, err := patternValue(wPath, "rank_pattern", c.RankPattern, key)
		if err != nil {
			return err
		}
		if !fromPattern {
			want = *c.R
		}
		if r != uint64(want) {
			src := fmt.Sprintf("r = %d", want)
			if fromPattern {
				src = fmt.Sprintf("rank_pattern gives %d", want)
			}
			return fmt.Errorf("%s: tensor %s has rank %d, but %s: %s", wPath, na, r, peftConfigFile, src)
		}
		alpha, ok, err := patternValue(wPath, "alpha_pattern", c.AlphaPattern, key)
		if err != nil {
			return err
		}
		if ok && alpha != *c.LoRAAlpha {
			return fmt.Errorf("%s: alpha_pattern gives %s alpha %g, not lora_alpha %g: per-projection alphas are not supported", wPath, key, alpha, *c.LoRAAlpha)
		}
		a, err := loraFactorF16(wPath, na, h.a.DType, h.a.Data, reverse(h.a.Shape))
		if err != nil {
			return err
		}
		b, err := loraFactorF16(wPath, nb, h.b.DType, h.b.Data, reverse(h.b.Shape))
		if err != nil {
			return err
		}
		l.Targets[base] = LoRAPair{A: a, B: b}
		l.src[base] = [2]string{na, nb}
	}
	return nil
}

// peftNameHint explains common tensors that are not projection factors.
func peftNameHint(name string) string {
	switch {
	case strings.Contains(name, "embed_tokens") || strings.Contains(name, "lm_head"):
		return ": adapting the embedding or the output head is not supported"
	case strings.Contains(name, "lora_magnitude_vector"):
		return ": DoRA magnitudes are not supported"
	case strings.HasSuffix(name, ".bias"):
		return ": biases are not supported"
	}
	return ""
}
