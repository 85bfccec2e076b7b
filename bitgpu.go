// Package bitgpu is the Go library behind the bitgpu command: it runs 1.58-bit (ternary) LLMs —
// BitNet b1.58 and the other ternary families — on a Vulkan GPU or the CPU, with every backend
// computing the same bits (the README's bit-exact contract).
//
//	m, err := bitgpu.Open("model.gguf", bitgpu.Options{}) // "" opens the built-in model
//	if err != nil { ... }
//	defer m.Close()
//	res, err := m.Generate(ctx, "The capital of France is", bitgpu.GenerateOptions{MaxTokens: 16},
//		func(text string) error { fmt.Print(text); return nil })
//
// A Model holds one KV cache and is not safe for concurrent use: Generate, Chat and Perplexity
// take turns on it. Cancelling the context passed to them stops the work between tokens.
package bitgpu

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// DefaultContext is the KV-cache size in tokens when Options.Ctx is 0, capped at the model's own
// context length.
const DefaultContext = 4096

// Options say how Open loads a model. The zero value is the CLI's defaults.
type Options struct {
	// Device picks the backend: "auto" (or ""): a discrete, integrated or virtual Vulkan GPU if
	// there is one, else the CPU; "gpu": Vulkan on any device, CPU-type ones included, falling
	// back to the CPU with a warning on Log when there is no Vulkan device; "cpu": the fast CPU
	// backend; "cpuref": the CPU reference backend. All give the same bits.
	Device string
	// Ctx is the KV-cache capacity in tokens: 0 means min(the model's context length,
	// DefaultCtx); above the model's context length it is an error.
	Ctx int
	// DefaultCtx replaces DefaultContext as the size Ctx 0 asks for (bitgpu perplexity: 512).
	DefaultCtx int
	// LMHead is the logits head: "f16" or "q8_0"; "" is cpuref.DefaultLMHead.
	LMHead string
	// TernaryPacking is the Vulkan backend's layout of the ternary projections
	// (`--ternary-packing`): "2bit" (4 weights a byte), "base3" (5 trits a byte as in ggml's
	// TQ1_0: 18.75 % fewer weight bytes, for matrices whose columns are a multiple of 256) or
	// "auto" / "" (the device's default: base3 on discrete and integrated GPUs, 2bit on
	// CPU-type devices). All give the same bits; the CPU backends ignore it.
	TernaryPacking string
	// Log receives warnings (a GPU fallback) and, with Verbose, one line per choice made (the
	// backend and why, the context size, the memory plan). nil discards them.
	Log     io.Writer
	Verbose bool
	// Progress, when not nil, receives a progress bar while GPU weights upload.
	Progress io.Writer
	// OnVulkanDevice, when not nil, is called with each Vulkan device the Model opens (a
	// *gpu.Device, typed loosely so that CPU-only builds compile), e.g. to read its validation
	// messages after Close.
	OnVulkanDevice func(dev interface{ ValidationMessages() []string })
	// LoRA are the adapters to apply, in order, to every forward pass (see LoRA); the Model's
	// backend and its sequences (NewSequence, each starting at these scales) are
	// runtime.LoRABackends, whose SetLoRAScales changes them (the server does, per request).
	LoRA []LoRA

	adapters []cpuref.Adapter // LoRA, opened and checked against the model by Open
}

// LoRA names a low-rank adapter to apply (`--lora FILE[:SCALE]`): Path is a llama.cpp GGUF LoRA
// adapter or a PEFT directory (model.OpenLoRA), Scale multiplies its output (1: as trained; 0
// loads it switched off). Each adapted projection computes y = BitLinear(x) + Scale·(alpha/r)·B(A·x)
// on its float input x (model.LoRA, cpuref.ApplyLoRA).
type LoRA struct {
	Path  string
	Scale float32
}

// ParseLoRA parses `--lora`'s value FILE[:SCALE]: a suffix after the last ':' that parses as a
// finite number is the scale, otherwise the whole value is the path and the scale is 1. Errors
// name the flag: an empty path, a non-finite scale.
func ParseLoRA(v string) (LoRA, error) {
	l := LoRA{Path: v, Scale: 1}
	if i := strings.LastIndexByte(v, ':'); i >= 0 {
		if s, err := strconv.ParseFloat(v[i+1:], 64); err == nil || errors.Is(err, strconv.ErrRange) {
			if math.IsNaN(s) || math.IsInf(s, 0) || math.Abs(s) > math.MaxFloat32 {
				return LoRA{}, fmt.Errorf("--lora %q: scale %s must be a finite number", v, v[i+1:])
			}
			l = LoRA{Path: v[:i], Scale: float32(s)}
		}
	}
	if l.Path == "" {
		return LoRA{}, fmt.Errorf("--lora %q: want FILE[:SCALE] (a GGUF LoRA adapter or a PEFT directory)", v)
	}
	return l, nil
}

// openAdapters opens o.LoRA's adapters and checks each against m (model.LoRA.Check: targets,
// shapes, architecture), in order. Errors name the adapter's path.
func openAdapters(specs []LoRA, m *model.Model) ([]cpuref.Adapter, error) {
	var ads []cpuref.Adapter
	for _, s := range specs {
		l, err := model.OpenLoRA(s.Path)
		if err == nil {
			err = l.Check(m)
		}
		if err != nil {
			if !strings.Contains(err.Error(), s.Path) {
				err = fmt.Errorf("%s: %w", s.Path, err)
			}
			return nil, err
		}
		ads = append(ads, cpuref.Adapter{LoRA: l, Scale: s.Scale})
	}
	return ads, nil
}

// Model is an open model with a backend and its KV cache. Close releases both.
type Model struct {
	m       *model.Model
	b       runtime.Backend
	ctx     int
	backend string
	reopen  func() (runtime.Backend, error) // another backend of the same kind (NewSequence)
	// adapters are the LoRA adapters every backend applies (Options.LoRA).
	adapters []cpuref.Adapter
}

// Open loads the model at path — a GGUF file, a Hugging Face checkpoint directory, or "" for the
// model built into the binary — on the backend o chooses. Errors name the file, key, tensor or
// option at fault; a Vulkan device that cannot hold the model is an error naming both sizes.
func Open(path string, o Options) (*Model, error) {
	head, err := cpuref.ParseLMHead(o.LMHead)
	if err != nil {
		return nil, err
	}
	if _, err := runtime.ParseTernaryPacking(o.TernaryPacking); err != nil {
		return nil, err
	}
	var m *model.Model
	if path == "" {
		o.note("no -m given; using the built-in model %s (%.1f MB; pass -m FILE for another)", assets.Name, float64(assets.Size())/1e6)
		m, err = assets.Open()
	} else if m, err = model.Open(path); err != nil && !strings.Contains(err.Error(), path) {
		err = fmt.Errorf("%s: %w", path, err) // every error names the file
	}
	if err != nil {
		return nil, err
	}
	def := o.DefaultCtx
	if def <= 0 {
		def = DefaultContext
	}
	ctx, err := ContextSize(o.Ctx, def, m.Config.ContextLength)
	if err != nil {
		m.Close()
		return nil, err
	}
	o.note("context %d tokens (--ctx; the model's context length is %d)", ctx, m.Config.ContextLength)
	if o.adapters, err = openAdapters(o.LoRA, m); err != nil {
		m.Close()
		return nil, err
	}
	for _, a := range o.adapters {
		o.note("LoRA adapter %s: %d projections, scale %g", a.LoRA.Path, len(a.LoRA.Targets), a.Scale)
	}
	b, name, err := openBackend(o, m, ctx, head)
	if err != nil {
		m.Close()
		return nil, err
	}
	o.Verbose = false // a second backend (NewSequence) repeats no notes
	reopen := func() (runtime.Backend, error) { b, _, err := openBackend(o, m, ctx, head); return b, err }
	return &Model{m: m, b: b, ctx: ctx, backend: name, reopen: reopen, adapters: o.adapters}, nil
}

// ContextSize resolves a requested KV-cache size against a model whose context length is limit:
// 0 means def capped at limit; a negative request or one above limit is an error naming --ctx.
func ContextSize(requested, def, limit int) (int, error) {
	switch {
	case requested < 0:
		return 0, fmt.Errorf("--ctx %d: must be positive", requested)
	case requested == 0:
		if def <= 0 || def > limit {
			return limit, nil
		}
		return def, nil
	case requested > limit:
		return 0, fmt.Errorf("--ctx %d: exceeds the model's context length %d", requested, limit)
	}
	return requested, nil
}

// note writes one "bitgpu: ..." line to o.Log when o.Verbose.
func (o Options) note(format string, args ...any) {
	if o.Verbose && o.Log != nil {
		fmt.Fprintf(o.Log, "bitgpu: "+format+"\n", args...)
	}
}

// warn writes one "bitgpu: warning: ..." line to o.Log.
func (o Options) warn(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, "bitgpu: warning: "+format+"\n", args...)
	}
}

// Close releases the backend (device memory included) and the model's file mappings. For a
// Vulkan backend, objects its owner left alive are an error wrapping gpu.ErrLeak.
func (m *Model) Close() error {
	if m == nil || m.m == nil {
		return nil
	}
	err := m.b.Close()
	err = errors.Join(err, m.m.Close())
	m.m = nil
	return err
}

// Adapters returns the LoRA adapters the Model applies (Options.LoRA), in order, each with the
// scale it was loaded at; nil when none.
func (m *Model) Adapters() []cpuref.Adapter {
	if m == nil {
		return nil
	}
	return m.adapters
}

// Backend names the backend in use: "gpu", "cpu" or "cpuref".
func (m *Model) Backend() string { return m.backend }

// Context is the KV-cache capacity in tokens.
func (m *Model) Context() int { return m.ctx }

// Config returns the model's hyper-parameters, tokenizer ids and chat template.
func (m *Model) Config() model.Config { return m.m.Config }

// Internals returns the loaded model and its backend, for callers that drive the runtime package
// directly (the bitgpu command does). The Model still owns both.
func (m *Model) Internals() (*model.Model, runtime.Backend) { return m.m, m.b }

// Tokenize returns the token ids of text, without BOS. With special, special-token text such as
// "<|eot_id|>" becomes the special token; otherwise it is plain text.
func (m *Model) Tokenize(text string, special bool) []int { return m.m.Tokenizer.Encode(text, special) }

// Detokenize returns the text of ids (special tokens as their text).
func (m *Model) Detokenize(ids []int) string { return m.m.Tokenizer.Decode(ids) }
