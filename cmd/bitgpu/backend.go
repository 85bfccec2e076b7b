package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// newGPUBackend builds the Vulkan backend of m with a KV cache of ctx tokens. It is nil until the
// Vulkan backend is linked in; openBackend then falls back to the CPU.
var newGPUBackend func(m *model.Model, ctx int) (runtime.Backend, error)

// openBackend returns the backend the --device flag names for m with a KV cache of ctx tokens:
// "cpu" and "cpuref" are the CPU reference backend (cpuref); "gpu" is newGPUBackend, falling back
// to cpuref with one warning line on stderr when the Vulkan backend is not available or finds no
// device (an error wrapping gpu.ErrNoDevice); "auto" is "gpu" when autoDevice finds a discrete,
// integrated or virtual GPU and "cpu" otherwise (with -v, one line on stderr says which and why).
// Other GPU errors are returned; any other device value is an error naming the flag.
func openBackend(device string, m *model.Model, ctx int, stderr io.Writer) (runtime.Backend, error) {
	if device == "auto" {
		var why string
		device, why = autoDevice()
		if verbose {
			fmt.Fprintf(stderr, "bitgpu: --device auto: %s: %s\n", device, why)
		}
	}
	switch device {
	case "cpu", "cpuref":
		return newCPUBackend(m, ctx)
	case "gpu":
		if newGPUBackend == nil {
			fmt.Fprintln(stderr, "bitgpu: warning: no Vulkan device (this build has no Vulkan backend yet); using --device cpu")
			return newCPUBackend(m, ctx)
		}
		b, err := newGPUBackend(m, ctx)
		if err == nil {
			return b, nil
		}
		if errors.Is(err, gpu.ErrNoDevice) {
			fmt.Fprintf(stderr, "bitgpu: warning: no Vulkan device (%v); using --device cpu\n", err)
			return newCPUBackend(m, ctx)
		}
		return nil, err
	}
	return nil, fmt.Errorf("--device %q: want auto, gpu, cpu or cpuref", device)
}

// autoDevice resolves --device auto to "gpu" or "cpu" and says why: "gpu" when BITGPU_DEVICE
// names a device or the Vulkan loader lists a discrete, integrated or virtual GPU; "cpu" when it
// lists only CPU-type devices (lavapipe, SwiftShader: they run the shaders on the CPU, slower than
// the CPU backend — llama.cpp skips them by default too) or none. `--device gpu` still forces
// Vulkan on any device.
func autoDevice() (device, why string) {
	if sel := os.Getenv("BITGPU_DEVICE"); sel != "" {
		return "gpu", fmt.Sprintf("BITGPU_DEVICE=%q names a Vulkan device", sel)
	}
	if newGPUBackend == nil {
		return "cpu", "this build has no Vulkan backend"
	}
	infos, err := gpu.Enumerate()
	if err != nil {
		return "cpu", err.Error()
	}
	var cpus []string
	for _, in := range infos {
		switch in.Type {
		case "discrete", "integrated", "virtual":
			return "gpu", fmt.Sprintf("found %s (%s GPU)", in.Name, in.Type)
		}
		cpus = append(cpus, in.Name)
	}
	if len(cpus) == 0 {
		return "cpu", "no Vulkan device"
	}
	return "cpu", fmt.Sprintf("only CPU-type Vulkan devices (%s), slower than the CPU backend; --device gpu forces Vulkan", strings.Join(cpus, ", "))
}

// newCPUBackend is cpuref.New as a runtime.Backend (never a typed nil).
func newCPUBackend(m *model.Model, ctx int) (runtime.Backend, error) {
	b, err := cpuref.New(m, ctx)
	if err != nil {
		return nil, err
	}
	return b, nil
}

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
	return m, nil
}

// defaultCtx is the --ctx of generate and chat when none is given, capped at the model's
// context length: a file's context_length is untrusted and may be far beyond what fits in memory
// (the KV cache grows with it), so the full length must be asked for.
const defaultCtx = 4096

// contextSize resolves --ctx against the model: 0 means def (defaultCtx when def <= 0), capped at
// the model's context length; a negative value or one above the model's context length is an
// error naming the flag.
func contextSize(flag int, def int, m *model.Model) (int, error) {
	limit := m.Config.ContextLength
	if def <= 0 {
		def = defaultCtx
	}
	switch {
	case flag < 0:
		return 0, fmt.Errorf("--ctx %d: must be positive", flag)
	case flag == 0:
		if def > limit {
			return limit, nil
		}
		return def, nil
	case flag > limit:
		return 0, fmt.Errorf("--ctx %d: exceeds the model's context length %d", flag, limit)
	}
	return flag, nil
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

// addModelFlags adds -m, --ctx (described by ctxHelp) and --device, which generate, chat and
// perplexity share and openSession / openModel / openBackend read.
func addModelFlags(cmd *cobra.Command, ctxHelp string) {
	f := cmd.Flags()
	f.StringP("model", "m", "", "model: GGUF file or Hugging Face directory (default: the built-in model)")
	f.Int("ctx", 0, ctxHelp)
	f.String("device", "auto", "backend: auto (a discrete, integrated or virtual GPU if there is one, else cpu), gpu (Vulkan on any device, CPU-type ones included; falls back to cpu without one), cpu or cpuref (the CPU reference backend)")
}

// session is what generate and chat share: the model, the backend the flags chose and the
// context size. Close releases both.
type session struct {
	m   *model.Model
	b   runtime.Backend
	ctx int
}

// openSession reads --ctx, --device and -m from cmd, opens the model and its backend (warnings
// on cmd's stderr). Errors name the flag or the file.
func openSession(cmd *cobra.Command) (*session, error) {
	f := cmd.Flags()
	ctxFlag, _ := f.GetInt("ctx")
	if ctxFlag < 0 {
		return nil, fmt.Errorf("--ctx %d: must be positive", ctxFlag)
	}
	device, _ := f.GetString("device")
	if err := checkDevice(device); err != nil {
		return nil, err
	}
	path, _ := f.GetString("model")
	m, err := openModel(path)
	if err != nil {
		return nil, err
	}
	ctx, err := contextSize(ctxFlag, 0, m)
	if err != nil {
		m.Close()
		return nil, err
	}
	if verbose {
		fmt.Fprintf(cmd.ErrOrStderr(), "bitgpu: context %d tokens (--ctx; the model's context length is %d)\n", ctx, m.Config.ContextLength)
	}
	b, err := openBackend(device, m, ctx, cmd.ErrOrStderr())
	if err != nil {
		m.Close()
		return nil, err
	}
	return &session{m: m, b: b, ctx: ctx}, nil
}

// Close releases the backend and the model. Its error is the backend's (for the GPU, objects left
// alive at Close wrap gpu.ErrLeak) or the model's.
func (s *session) Close() error {
	err := s.b.Close()
	if merr := s.m.Close(); err == nil {
		err = merr
	}
	return err
}

// noteBuiltin says, with -v, that no -m was given and the built-in model is used.
func noteBuiltin() {
	if verbose {
		fmt.Fprintf(os.Stderr, "bitgpu: no -m given; using the built-in model %s (%.1f MB; pass -m FILE for another)\n",
			assets.Name, float64(assets.Size())/1e6)
	}
}
