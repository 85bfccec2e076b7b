//go:build cgo

package gpu

/*
#include "vkshim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	vk "github.com/goki/vulkan"
)

// Buffer is a Vulkan storage buffer backed by a sub-allocation of a large memory block.
// Device-local buffers (NewBuffer) are filled and read through a staging buffer, or directly where
// the device-local memory is also host-visible (integrated GPUs, lavapipe, SwiftShader).
// Host buffers (NewHostBuffer) are always mapped, for small frequent transfers.
// Offsets and sizes are in bytes.
type Buffer struct {
	d    *Device
	buf  vk.Buffer
	mem  allocation
	size uint64
	ptr  unsafe.Pointer // host pointer when the memory is host-visible and coherent
}

const bufferUsage = vk.BufferUsageStorageBufferBit | vk.BufferUsageUniformBufferBit |
	vk.BufferUsageTransferSrcBit | vk.BufferUsageTransferDstBit

// NewBuffer allocates a device-local storage buffer of size bytes (contents undefined), in the
// memory types deviceLocalOrder ranks, moving on to the next when one is full. It returns an error
// naming the size and the free memory when the device cannot hold it.
func (d *Device) NewBuffer(size uint64) (*Buffer, error) {
	return d.newBuffer(size, vk.MemoryPropertyDeviceLocalBit, 0, vk.MemoryPropertyDeviceLocalBit|vk.MemoryPropertyHostVisibleBit|vk.MemoryPropertyHostCoherentBit)
}

// NewHostBuffer allocates a host-visible, host-coherent storage buffer of size bytes that the
// CPU reads and writes without staging (preferring host-cached memory for fast reads).
func (d *Device) NewHostBuffer(size uint64) (*Buffer, error) {
	return d.newBuffer(size, vk.MemoryPropertyHostVisibleBit|vk.MemoryPropertyHostCoherentBit, vk.MemoryPropertyHostVisibleBit|vk.MemoryPropertyHostCoherentBit, vk.MemoryPropertyHostCachedBit)
}

func (d *Device) newBuffer(size uint64, prefer, need, want vk.MemoryPropertyFlagBits) (*Buffer, error) {
	if size == 0 {
		return nil, fmt.Errorf("buffer of 0 bytes")
	}
	var buf vk.Buffer
	r := vk.CreateBuffer(d.dev, &vk.BufferCreateInfo{
		SType:       vk.StructureTypeBufferCreateInfo,
		Size:        vk.DeviceSize(size),
		Usage:       vk.BufferUsageFlags(bufferUsage),
		SharingMode: vk.SharingModeExclusive,
	}, nil, &buf)
	if err := check(r, "vkCreateBuffer"); err != nil {
		return nil, fmt.Errorf("buffer of %s: %w", FormatBytes(size), err)
	}
	var req vk.MemoryRequirements
	vk.GetBufferMemoryRequirements(d.dev, buf, &req)
	req.Deref()
	var order []uint32
	deviceLocal := need == 0
	if deviceLocal {
		types, heaps := d.memTypes()
		order = deviceLocalOrder(types, heaps, req.MemoryTypeBits, d.hideHostVisibleVRAM)
	}
	if len(order) == 0 { // host buffers, or a device without device-local memory
		ti, ok := d.alloc.findType(req.MemoryTypeBits, need|prefer, want)
		if !ok {
			ti, ok = d.alloc.findType(req.MemoryTypeBits, need, want)
		}
		if !ok {
			vk.DestroyBuffer(d.dev, buf, nil)
			return nil, fmt.Errorf("buffer of %s: no suitable memory type", FormatBytes(size))
		}
		order = []uint32{ti}
	}
	align := uint64(req.Alignment)
	if a := d.info.StorageBufferAlignment; a > align {
		align = a
	}
	var (
		mem allocation
		ti  uint32
		err error
	)
	for _, ti = range order {
		if mem, err = d.alloc.alloc(ti, uint64(req.Size), align); err == nil {
			break
		}
	}
	if err != nil {
		vk.DestroyBuffer(d.dev, buf, nil)
		return nil, err
	}
	if err := check(vk.BindBufferMemory(d.dev, buf, mem.blk.mem, vk.DeviceSize(mem.off)), "vkBindBufferMemory"); err != nil {
		d.alloc.release(mem)
		vk.DestroyBuffer(d.dev, buf, nil)
		return nil, err
	}
	b := &Buffer{d: d, buf: buf, mem: mem, size: size}
	flags := d.memProps.MemoryTypes[ti].PropertyFlags
	coherent := vk.MemoryPropertyFlags(vk.MemoryPropertyHostVisibleBit | vk.MemoryPropertyHostCoherentBit)
	if mem.blk.mapped != nil && flags&coherent == coherent && !((d.forceStaging || d.hideHostVisibleVRAM) && deviceLocal) {
		b.ptr = unsafe.Add(mem.blk.mapped, mem.off)
	}
	d.track(b, b.Release)
	return b, nil
}

// Size is the buffer's size in bytes.
func (b *Buffer) Size() uint64 { return b.size }

// HostVisible reports whether the CPU reads and writes the buffer directly (no staging copy).
func (b *Buffer) HostVisible() bool { return b.ptr != nil }

// Release destroys the buffer and returns its memory to the allocator. The buffer must not be in
// use by a pending submission. Releasing twice is harmless.
func (b *Buffer) Release() {
	if b == nil || b.buf == nil {
		return
	}
	vk.DestroyBuffer(b.d.dev, b.buf, nil)
	b.d.alloc.release(b.mem)
	b.buf = nil
	b.d.untrack(b)
}

// Range is a sub-range of a buffer, in bytes, as bound to a kernel.
type Range struct {
	Buf    *Buffer
	Offset uint64
	Size   uint64
}

// Whole is the range covering the entire buffer.
func (b *Buffer) Whole() Range { return Range{Buf: b, Size: b.size} }

// Slice is the range [off, off+size) of the buffer; it panics only on a programming error
// (a range outside the buffer), never on user input.
func (b *Buffer) Slice(off, size uint64) Range {
	if off+size > b.size || off+size < off {
		panic(fmt.Sprintf("gpu: slice [%d, %d) outside buffer of %d bytes", off, off+size, b.size))
	}
	return Range{Buf: b, Offset: off, Size: size}
}

func (b *Buffer) bounds(off uint64, n int, what string) error {
	if b.buf == nil {
		return fmt.Errorf("%s on a released buffer", what)
	}
	if off+uint64(n) > b.size || off+uint64(n) < off {
		return fmt.Errorf("%s of %d bytes at offset %d outside buffer of %d bytes", what, n, off, b.size)
	}
	return nil
}

// Upload copies data into the buffer at byte offset off and returns when the copy is complete.
func (b *Buffer) Upload(off uint64, data []byte) error {
	if err := b.bounds(off, len(data), "upload"); err != nil || len(data) == 0 {
		return err
	}
	if b.ptr != nil {
		copy(unsafe.Slice((*byte)(unsafe.Add(b.ptr, off)), len(data)), data)
		return nil
	}
	return b.d.viaStaging(len(data), func(stage []byte, done int) (copyFn func(vk.CommandBuffer, int)) {
		return func(cb vk.CommandBuffer, n int) {
			copy(stage[:n], data[done:done+n])
			C.bitgpu_cmd_copy((C.VkCommandBuffer)(ptr(cb)), (C.VkBuffer)(ptr(b.d.staging.buf)), (C.VkBuffer)(ptr(b.buf)), 0, C.uint64_t(off+uint64(done)), C.uint64_t(n))
		}
	}, nil)
}

// Download copies len(dst) bytes from byte offset off of the buffer into dst. It must not race
// with a pending submission writing the buffer.
func (b *Buffer) Download(off uint64, dst []byte) error {
	if err := b.bounds(off, len(dst), "download"); err != nil || len(dst) == 0 {
		return err
	}
	if b.ptr != nil {
		copy(dst, unsafe.Slice((*byte)(unsafe.Add(b.ptr, off)), len(dst)))
		return nil
	}
	return b.d.viaStaging(len(dst), func(stage []byte, done int) func(vk.CommandBuffer, int) {
		return func(cb vk.CommandBuffer, n int) {
			C.bitgpu_cmd_copy((C.VkCommandBuffer)(ptr(cb)), (C.VkBuffer)(ptr(b.buf)), (C.VkBuffer)(ptr(b.d.staging.buf)), C.uint64_t(off+uint64(done)), 0, C.uint64_t(n))
		}
	}, func(stage []byte, done, n int) { copy(dst[done:done+n], stage[:n]) })
}

// stagingSize is the size of the device's reusable host-visible staging buffer; larger transfers
// go through it in chunks.
const stagingSize = 16 << 20

// viaStaging moves total bytes through the staging buffer chunk by chunk: record(stage, done)
// returns the function recording one chunk's copy; after is called once a chunk's copy has
// completed (for downloads).
func (d *Device) viaStaging(total int, record func(stage []byte, done int) func(vk.CommandBuffer, int), after func(stage []byte, done, n int)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.staging == nil {
		s, err := d.NewHostBuffer(stagingSize)
		if err != nil {
			return fmt.Errorf("staging buffer: %w", err)
		}
		d.untrack(s) // the device's own, released by Close
		d.staging = s
	}
	stage := unsafe.Slice((*byte)(d.staging.ptr), stagingSize)
	for done := 0; done < total; {
		n := min(total-done, stagingSize)
		rec := record(stage, done)
		if err := d.submitOnceLocked(func(cb vk.CommandBuffer) { rec(cb, n) }); err != nil {
			return err
		}
		if after != nil {
			after(stage, done, n)
		}
		done += n
	}
	return nil
}

// submitOnceLocked records a one-time command buffer with rec, submits it and waits. d.mu held.
func (d *Device) submitOnceLocked(rec func(cb vk.CommandBuffer)) error {
	cbs := make([]vk.CommandBuffer, 1)
	if err := check(vk.AllocateCommandBuffers(d.dev, &vk.CommandBufferAllocateInfo{
		SType:              vk.StructureTypeCommandBufferAllocateInfo,
		CommandPool:        d.cmdPool,
		Level:              vk.CommandBufferLevelPrimary,
		CommandBufferCount: 1,
	}, cbs), "vkAllocateCommandBuffers"); err != nil {
		return err
	}
	defer vk.FreeCommandBuffers(d.dev, d.cmdPool, 1, cbs)
	cb := cbs[0]
	if err := check(vk.BeginCommandBuffer(cb, &vk.CommandBufferBeginInfo{
		SType: vk.StructureTypeCommandBufferBeginInfo,
		Flags: vk.CommandBufferUsageFlags(vk.CommandBufferUsageOneTimeSubmitBit),
	}), "vkBeginCommandBuffer"); err != nil {
		return err
	}
	rec(cb)
	if err := check(vk.EndCommandBuffer(cb), "vkEndCommandBuffer"); err != nil {
		return err
	}
	return d.submitAndWaitLocked(cb)
}

// submitAndWaitLocked submits cb on the compute queue and waits for it with a fence. d.mu held.
func (d *Device) submitAndWaitLocked(cb vk.CommandBuffer) error {
	var fence vk.Fence
	if err := check(vk.CreateFence(d.dev, &vk.FenceCreateInfo{SType: vk.StructureTypeFenceCreateInfo}, nil, &fence), "vkCreateFence"); err != nil {
		return err
	}
	defer vk.DestroyFence(d.dev, fence, nil)
	return d.submitWaitLocked(cb, fence)
}

// submitWaitLocked submits cb signalling fence, waits for the fence and resets it. d.mu held.
func (d *Device) submitWaitLocked(cb vk.CommandBuffer, fence vk.Fence) error {
	r := C.bitgpu_submit_wait((C.VkDevice)(ptr(d.dev)), (C.VkQueue)(ptr(d.queue)), (C.VkCommandBuffer)(ptr(cb)), (C.VkFence)(ptr(fence)))
	return check(vk.Result(r), "vkQueueSubmit/vkWaitForFences")
}

// Elem is an element type the typed buffer helpers move.
type Elem interface {
	~float32 | ~uint32 | ~int32 | ~uint16 | ~int16 | ~uint8 | ~int8
}

func asBytes[T Elem](v []T) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v)*int(unsafe.Sizeof(v[0])))
}

// Write uploads v into b starting at element index at (byte offset at*sizeof(T)).
func Write[T Elem](b *Buffer, at uint64, v []T) error {
	var z T
	return b.Upload(at*uint64(unsafe.Sizeof(z)), asBytes(v))
}

// Read downloads n elements of type T from b starting at element index at.
func Read[T Elem](b *Buffer, at uint64, n int) ([]T, error) {
	out := make([]T, n)
	var z T
	if err := b.Download(at*uint64(unsafe.Sizeof(z)), asBytes(out)); err != nil {
		return nil, err
	}
	return out, nil
}

// NewBufferFrom allocates a device-local buffer holding v (len(v)*sizeof(T) bytes).
func NewBufferFrom[T Elem](d *Device, v []T) (*Buffer, error) {
	var z T
	b, err := d.NewBuffer(uint64(len(v)) * uint64(unsafe.Sizeof(z)))
	if err != nil {
		return nil, err
	}
	if err := Write(b, 0, v); err != nil {
		b.Release()
		return nil, err
	}
	return b, nil
}

func unsafePtr[T Elem | uint64](v []T) unsafe.Pointer { return unsafe.Pointer(&v[0]) }
