package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Open opens a model for inference:
//
//   - a GGUF file (OpenGGUF): hyper-parameters from its metadata (ConfigFromGGUF), tensors as
//     stored (memory-mapped), tokenizer from its metadata (NewTokenizerFromGGUF);
//   - a Hugging Face checkpoint directory — or its model.safetensors file — holding config.json,
//     model.safetensors (or sharded model-*.safetensors with model.safetensors.index.json) and the
//     tokenizer files (OpenHF, NewTokenizerFromHF).
//
// Every tensor is checked against the config (Config.ValidateTensors) and for NaN and Inf values
// (CheckFinite). Errors name the file and the key, tensor or byte offset at fault. Close the
// model to release its file mappings.
func Open(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return OpenHF(path)
	}
	if strings.HasSuffix(path, ".safetensors") {
		return OpenHF(filepath.Dir(path))
	}
	return openGGUFModel(path)
}

// openGGUFModel opens a GGUF file as a Model.
func openGGUFModel(path string) (*Model, error) {
	g, err := OpenGGUF(path)
	if err != nil {
		return nil, err
	}
	m, err := modelFromGGUF(g)
	if err != nil {
		_ = g.Close()
		return nil, err
	}
	return m, nil
}

// modelFromGGUF builds a Model from a parsed GGUF; on success the Model owns g's mapping.
func modelFromGGUF(g *GGUF) (*Model, error) {
	tensors := g.TensorMap()
	cfg, err := ConfigFromGGUF(g.Meta, tensors)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", g.Path, err)
	}
	if err := CheckFinite(tensors); err != nil {
		return nil, fmt.Errorf("%s: %w", g.Path, err)
	}
	tok, err := NewTokenizerFromGGUF(g.Meta)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", g.Path, err)
	}
	if tok.VocabSize() != cfg.VocabSize {
		return nil, fmt.Errorf("%s: tokenizer has %d tokens, model vocabulary is %d", g.Path, tok.VocabSize(), cfg.VocabSize)
	}
	cfg.BOS, cfg.EOS, cfg.EOT, cfg.AddBOS = tok.BOS(), tok.EOS(), tok.EOT(), tok.AddBOS()
	return &Model{Path: g.Path, Config: cfg, Tensors: tensors, Tokenizer: tok, closer: g.Close}, nil
}

// WeightScale returns the extra per-tensor multiplier of projection weight (e.g.
// "blk.0.attn_q.weight"): the F32 value of its companion "blk.0.attn_q.scale" tensor, which
// upstream llama.cpp `bitnet` files may carry, or 1 when there is none. The effective weight is
// the decoded weight (trit times its own I2_S/TQ scale, or the float value) times WeightScale.
func (m *Model) WeightScale(weight string) float32 {
	name, ok := strings.CutSuffix(weight, ".weight")
	if !ok {
		return 1
	}
	t := m.Tensors[name+".scale"]
	if t == nil || t.Type != TypeF32 || len(t.Data) < 4 {
		return 1
	}
	return math.Float32frombits(binary.LittleEndian.Uint32(t.Data))
}

// ModelToGGUF lays out m as a GGUF ready for WriteGGUF: version 3, the hyper-parameter keys of
// m.Config (Config.GGUFMetadata), then tokKeys from tokMeta (the tokenizer's GGUF metadata, which a
// Tokenizer cannot give back), and the tensors of Config.TensorSpecs in that order followed by any
// `*.scale` tensors in name order. The tensors alias m's data. It returns an error naming a
// missing tensor or a key that is listed twice or has no value.
func ModelToGGUF(m *Model, tokKeys []string, tokMeta map[string]any) (*GGUF, error) {
	keys, meta := m.Config.GGUFMetadata()
	g := &GGUF{Version: 3, Keys: keys, Meta: meta, Alignment: GGUFDefaultAlignment}
	for _, k := range tokKeys {
		v, ok := tokMeta[k]
		if !ok {
			return nil, fmt.Errorf("gguf: key %q is listed but has no value", k)
		}
		if _, dup := g.Meta[k]; dup {
			return nil, fmt.Errorf("gguf: key %q is listed twice", k)
		}
		g.Set(k, v)
	}
	used := map[string]bool{}
	for _, s := range m.Config.TensorSpecs() {
		t := m.Tensors[s.Name]
		if t == nil {
			return nil, fmt.Errorf("gguf: tensor %s is missing (expected shape %v)", s.Name, s.Shape)
		}
		g.Tensors = append(g.Tensors, t)
		used[s.Name] = true
	}
	var extra []string
	for n := range m.Tensors {
		if !used[n] && strings.HasSuffix(n, ".scale") {
			extra = append(extra, n)
		}
	}
	sort.Strings(extra)
	for _, n := range extra {
		g.Tensors = append(g.Tensors, m.Tensors[n])
	}
	return g, nil
}
