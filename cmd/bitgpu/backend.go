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
// "cpu" is cpuref; "gpu" is newGPUBackend, falling back to cpuref with one warning line on stderr
// when the Vulkan backend is not available or finds no device (an error wrapping
// gpu.ErrNoDevice). Other GPU errors are returned; any other device value is an error naming the
// flag.
func openBackend(device string, m *model.Model, ctx int, stderr io.Writer) (runtime.Backend, error) {
	switch device {
	case "cpu":
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
	return nil, fmt.Errorf("--device %q: want gpu or cpu", device)
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
		fmt.Fprintf(os.Stderr, "bitgpu: no -m given; using the built-in model %s (%.1f MB; pass -m FILE for another)\n",
			assets.Name, float64(assets.Size())/1e6)
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

// contextSize resolves --ctx against the model: 0 means def (capped at the model's context
// length); a negative value or one above the model's context length is an error naming the flag.
func contextSize(flag int, def int, m *model.Model) (int, error) {
	limit := m.Config.ContextLength
	switch {
	case flag < 0:
		return 0, fmt.Errorf("--ctx %d: must be positive", flag)
	case flag == 0:
		if def <= 0 || def > limit {
			return limit, nil
		}
		return def, nil
	case flag > limit:
		return 0, fmt.Errorf("--ctx %d: exceeds the model's context length %d", flag, limit)
	}
	return flag, nil
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
	f.String("device", "gpu", "backend: gpu (Vulkan; falls back to cpu without a device) or cpu")
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
	b, err := openBackend(device, m, ctx, cmd.ErrOrStderr())
	if err != nil {
		m.Close()
		return nil, err
	}
	return &session{m: m, b: b, ctx: ctx}, nil
}

// Close releases the backend and the model.
func (s *session) Close() {
	s.b.Close()
	s.m.Close()
}
