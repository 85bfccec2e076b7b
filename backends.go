package bitgpu

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/bitgpu/bitgpu/cpu"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// vulkanOpen builds the Vulkan backend of m (a ctx-token cache, the head logits head); nil in a
// build without cgo, which has no Vulkan backend. Errors without a device wrap gpu.ErrNoDevice.
var vulkanOpen func(o Options, m *model.Model, ctx int, head cpuref.LMHead) (runtime.Backend, error)

// vulkanList lists the Vulkan devices' names and types ("discrete", "integrated", "virtual",
// "cpu", "other"); nil without cgo.
var vulkanList func() (names, types []string, err error)

// HaveVulkan reports whether this build has the Vulkan backend (it needs cgo).
func HaveVulkan() bool { return vulkanOpen != nil }

// CheckDevice reports whether device is one Options.Device accepts, as an error naming --device.
func CheckDevice(device string) error {
	switch device {
	case "", "auto", "gpu", "cpu", "cpuref":
		return nil
	}
	return fmt.Errorf("--device %q: want auto, gpu, cpu or cpuref", device)
}

// openBackend returns the backend o.Device names for m and its name (see Options.Device).
func openBackend(o Options, m *model.Model, ctx int, head cpuref.LMHead) (runtime.Backend, string, error) {
	if err := CheckDevice(o.Device); err != nil {
		return nil, "", err
	}
	device := o.Device
	if device == "" || device == "auto" {
		var why string
		device, why = AutoDevice()
		o.note("--device auto: %s: %s", device, why)
	}
	switch device {
	case "cpu":
		return openCPU(o, m, ctx, head)
	case "cpuref":
		b, err := cpuref.New(m, ctx, cpuref.WithLMHead(head), cpuref.WithLoRA(o.adapters...))
		if err != nil {
			return nil, "", err
		}
		return b, "cpuref", nil
	}
	if vulkanOpen == nil {
		o.warn("no Vulkan device (this build has no Vulkan backend: built with CGO_ENABLED=0); using --device cpu")
		return openCPU(o, m, ctx, head)
	}
	b, err := vulkanOpen(o, m, ctx, head)
	if errors.Is(err, gpu.ErrNoDevice) {
		o.warn("no Vulkan device (%v); using --device cpu", err)
		return openCPU(o, m, ctx, head)
	}
	if err != nil {
		return nil, "", err
	}
	return b, "gpu", nil
}

// openCPU is the fast CPU backend (package cpu) with the head logits head.
func openCPU(o Options, m *model.Model, ctx int, head cpuref.LMHead) (runtime.Backend, string, error) {
	b, err := cpu.New(m, ctx, cpu.WithLMHead(head), cpu.WithLoRA(o.adapters...))
	if err != nil {
		return nil, "", err
	}
	o.note("CPU backend: %s kernel, %d threads", b.Kernel(), b.Threads())
	return b, "cpu", nil
}

// AutoDevice resolves Options.Device "auto" to "gpu" or "cpu" and says why: "gpu" when
// BITGPU_DEVICE names a device or the Vulkan loader lists a discrete, integrated or virtual GPU;
// "cpu" when it lists only CPU-type devices (lavapipe, SwiftShader: they run shaders on the CPU,
// slower than the CPU backend — llama.cpp skips them by default too), none, or the build has no
// Vulkan backend.
func AutoDevice() (device, why string) {
	if sel := os.Getenv("BITGPU_DEVICE"); sel != "" {
		return "gpu", fmt.Sprintf("BITGPU_DEVICE=%q names a Vulkan device", sel)
	}
	if vulkanOpen == nil || vulkanList == nil {
		return "cpu", "this build has no Vulkan backend (built with CGO_ENABLED=0)"
	}
	names, types, err := vulkanList()
	if err != nil {
		return "cpu", err.Error()
	}
	var cpus []string
	for i, name := range names {
		switch types[i] {
		case "discrete", "integrated", "virtual":
			return "gpu", fmt.Sprintf("found %s (%s GPU)", name, types[i])
		}
		cpus = append(cpus, name)
	}
	if len(cpus) == 0 {
		return "cpu", "no Vulkan device"
	}
	return "cpu", fmt.Sprintf("only CPU-type Vulkan devices (%s), slower than the CPU backend; --device gpu forces Vulkan", strings.Join(cpus, ", "))
}
