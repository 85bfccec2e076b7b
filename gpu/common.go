package gpu

// This file builds without cgo too: a CGO_ENABLED=0 build of bitgpu has no Vulkan backend (every
// other file of the package needs cgo), but its CPU paths still name ErrNoDevice and format
// sizes with FormatBytes.

import (
	"errors"
	"fmt"
)

// ErrNoDevice is returned (wrapped) by Open and Enumerate when no Vulkan loader or no Vulkan
// device is available. Callers that can fall back to the CPU test for it with errors.Is.
var ErrNoDevice = errors.New("no Vulkan device")

// ErrLeak is returned (wrapped) by Device.Close when buffers, kernels, sequences or timers were
// still alive: Close frees them, but their owner forgot to, so tests fail on it.
var ErrLeak = errors.New("objects still alive at Close")

// FormatBytes formats n bytes with a binary unit: "512 B", "1.5 KiB", "128.0 MiB", "2.00 GiB".
func FormatBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
