//go:build cgo

package gpu

import (
	"testing"

	vk "github.com/goki/vulkan"
	"github.com/stretchr/testify/require"
)

// TestDeviceLocalOrder ranks memory types on the layouts real devices report.
func TestDeviceLocalOrder(t *testing.T) {
	const (
		dl  = vk.MemoryPropertyFlags(vk.MemoryPropertyDeviceLocalBit)
		hv  = vk.MemoryPropertyFlags(vk.MemoryPropertyHostVisibleBit | vk.MemoryPropertyHostCoherentBit)
		hc  = vk.MemoryPropertyFlags(vk.MemoryPropertyHostCachedBit)
		all = ^uint32(0)
	)
	// A discrete GPU without resizable BAR: 8 GiB of VRAM, a 256 MiB host-visible window of it,
	// and system memory. Weights go to the big VRAM type, the BAR window last, never system RAM.
	discrete := []memType{{dl, 0}, {dl | hv, 1}, {hv, 2}, {hv | hc, 2}}
	heaps := []uint64{8 << 30, 256 << 20, 16 << 30}
	require.Equal(t, []uint32{0, 1}, deviceLocalOrder(discrete, heaps, all, false))
	// The buffer's allowed types limit the list.
	require.Equal(t, []uint32{1}, deviceLocalOrder(discrete, heaps, 0b1110, false))

	// Resizable BAR: all of VRAM host-visible: the direct type first, no staging needed.
	rebar := []memType{{dl, 0}, {dl | hv, 0}, {hv, 1}}
	require.Equal(t, []uint32{1, 0}, deviceLocalOrder(rebar, []uint64{8 << 30, 16 << 30}, all, false))
	// Hidden (BITGPU_DISABLE=host-visible-vram): host visibility no longer ranks first.
	require.Equal(t, []uint32{0, 1}, deviceLocalOrder(rebar, []uint64{8 << 30, 16 << 30}, all, true))

	// Unified memory (integrated GPUs, lavapipe, SwiftShader): one heap, device-local and
	// host-visible.
	uma := []memType{{dl | hv, 0}, {dl | hv | hc, 0}}
	require.Equal(t, []uint32{0, 1}, deviceLocalOrder(uma, []uint64{2 << 30}, all, false))
	require.Equal(t, []uint32{0, 1}, deviceLocalOrder(uma, []uint64{2 << 30}, all, true))

	// No device-local memory at all: nothing (NewBuffer then takes any allowed type).
	require.Empty(t, deviceLocalOrder([]memType{{hv, 0}}, []uint64{1 << 30}, all, false))
}

// TestHiddenHostVisibleVRAM: with BITGPU_DISABLE=host-visible-vram, device-local buffers are not
// mapped, so uploads and reads go through the staging buffer — and still round-trip, with
// synchronization validation on.
func TestHiddenHostVisibleVRAM(t *testing.T) {
	d := openValidated(t, func(o *Options) { o.Disable = append(o.Disable, "host-visible-vram") })
	b, err := NewBufferFrom(d, []float32{1, 2, 3, 4, 5})
	require.NoError(t, err)
	require.False(t, b.HostVisible(), "device-local buffers go through staging")
	require.NoError(t, Write(b, 1, []float32{7, 8}))
	got, err := Read[float32](b, 0, 5)
	require.NoError(t, err)
	require.Equal(t, []float32{1, 7, 8, 4, 5}, got)
	h, err := d.NewHostBuffer(16)
	require.NoError(t, err)
	require.True(t, h.HostVisible(), "host buffers stay mapped")
	b.Release()
	h.Release()
	require.NoError(t, d.Close())
	require.Empty(t, d.ValidationMessages())
}
