package main

import (
	"bufio"
	"fmt"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu"
	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// openModel opens the -m model (GGUF file or Hugging Face directory), or, when path is empty, the
// model built into the binary (package assets), saying so in one line on stderr. Errors name the
// file.
func openModel(path string) (*model.Model, error) {
	if path == "" {
		noteBuiltin()
		return assets.Open()
	}
	m, err := model.Open(path)
	if err != nil {
		if strings.Contains(err.Error(), path) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := applyI2SLayout(m); err != nil {
		_ = m.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// closeInto closes c and, when *err is nil, stores its error there: for a deferred Close whose
// failure (a leak reported by the device, an unmap error) must fail the command.
func closeInto(err *error, c interface{ Close() error }) {
	if cerr := c.Close(); *err == nil {
		*err = cerr
	}
}

// peakMemory returns the process's peak resident memory in bytes: VmHWM from /proc/self/status
// where there is one, otherwise the Go runtime's total obtained from the OS (runtime.MemStats.Sys,
// which misses memory-mapped model files).
func peakMemory() uint64 {
	if f, err := os.Open("/proc/self/status"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
				fields := strings.Fields(rest)
				if len(fields) == 2 && fields[1] == "kB" {
					if kb, err := strconv.ParseUint(fields[0], 10, 64); err == nil {
						return kb << 10
					}
				}
			}
		}
	}
	var ms goruntime.MemStats
	goruntime.ReadMemStats(&ms)
	return ms.Sys
}

// isTerminal reports whether f is a character device (a terminal, for bitgpu's purposes).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// ternaryPackingHelp describes --ternary-packing (generate, chat, perplexity, serve, bench e2e).
const ternaryPackingHelp = "GPU layout of the ternary weights: 2bit (4 weights a byte), base3 (5 trits a byte as in TQ1_0: 18.75 % fewer weight bytes per token, for matrices whose width is a multiple of 256) or auto (base3 on discrete and integrated GPUs, 2bit on CPU-type Vulkan devices such as lavapipe); the same bits either way"

// addModelFlags adds -m, --ctx (described by ctxHelp), --device, --lm-head and
// --ternary-packing, which generate, chat, perplexity and serve share and openSession /
// openModel / openBackend / readLMHead read.
func addModelFlags(cmd *cobra.Command, ctxHelp string) {
	f := cmd.Flags()
	f.StringP("model", "m", "", "model: GGUF file or Hugging Face directory (default: the built-in model)")
	f.Int("ctx", 0, ctxHelp)
	f.String("lm-head", string(cpuref.DefaultLMHead), "logits head: f16 (the F16 output matrix, f32 dot products) or q8_0 (the matrix re-quantized to Q8_0 at load, int8 dot products with the quantized output norm: half the bytes per token); a file whose output matrix is Q8_0 always runs q8_0")
	f.String("ternary-packing", string(runtime.PackingAuto), ternaryPackingHelp)
	f.StringArray("lora", nil, "apply a LoRA adapter: FILE[:SCALE], a llama.cpp GGUF LoRA adapter or a PEFT directory (adapter_config.json + adapter_model.safetensors), SCALE 1 by default; repeat for several (applied in order)")
	f.String("device", "auto", "backend: auto (a discrete, integrated or virtual GPU if there is one, else cpu), gpu (Vulkan on any device, CPU-type ones included; falls back to cpu without one), cpu (the fast CPU backend: AVX2 where the CPU has it, GOMAXPROCS threads) or cpuref (the CPU reference backend, the same bits)")
}

// session is what generate and chat share: the model, the backend the flags chose and the
// context size (opened by the bitgpu library). Close releases both.
type session struct {
	lib *bitgpu.Model
	m   *model.Model
	b   runtime.Backend
	ctx int
}

// openSession reads -m, --ctx, --device, --lm-head and --ternary-packing from cmd and opens the model on its backend
// with bitgpu.Open (warnings, and with -v the choices made, on cmd's stderr); defCtx is the
// context size when --ctx is absent (0: bitgpu.DefaultContext). Errors name the flag or the file.
func openSession(cmd *cobra.Command, defCtx int) (*session, error) {
	f := cmd.Flags()
	o := bitgpu.Options{DefaultCtx: defCtx, Log: cmd.ErrOrStderr(), Verbose: verbose,
		OnVulkanDevice: func(d interface{ ValidationMessages() []string }) { watchValidation(d) }}
	o.Ctx, _ = f.GetInt("ctx")
	o.Device, _ = f.GetString("device")
	o.LMHead, _ = f.GetString("lm-head")
	o.TernaryPacking, _ = f.GetString("ternary-packing")
	if o.Ctx < 0 {
		return nil, fmt.Errorf("--ctx %d: must be positive", o.Ctx)
	}
	loras, _ := f.GetStringArray("lora")
	for _, v := range loras {
		l, err := bitgpu.ParseLoRA(v)
		if err != nil {
			return nil, err
		}
		o.LoRA = append(o.LoRA, l)
	}
	if err := bitgpu.CheckDevice(o.Device); err != nil {
		return nil, err
	}
	if _, err := cpuref.ParseLMHead(o.LMHead); err != nil {
		return nil, err
	}
	if _, err := runtime.ParseTernaryPacking(o.TernaryPacking); err != nil {
		return nil, err
	}
	if isTerminal(os.Stderr) {
		o.Progress = os.Stderr
	}
	path, _ := f.GetString("model")
	lib, err := bitgpu.Open(path, o)
	if err != nil {
		return nil, err
	}
	m, b := lib.Internals()
	return &session{lib: lib, m: m, b: b, ctx: lib.Context()}, nil
}

// Close releases the backend and the model. Its error is the backend's (for the GPU, objects left
// alive at Close wrap gpu.ErrLeak) or the model's.
func (s *session) Close() error { return s.lib.Close() }

// noteBuiltin says, with -v, that no -m was given and the built-in model is used.
func noteBuiltin() {
	if verbose {
		fmt.Fprintf(os.Stderr, "bitgpu: no -m given; using the built-in model %s (%.1f MB; pass -m FILE for another)\n",
			assets.Name, float64(assets.Size())/1e6)
	}
}
