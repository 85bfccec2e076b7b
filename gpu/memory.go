//go:build cgo

package gpu

import (
	"fmt"
	"sort"
	"sync"
	"unsafe"

	vk "github.com/goki/vulkan"
)

// blockSize is the size of the memory blocks the allocator requests from Vulkan; buffers are
// sub-allocated from them so a model with hundreds of tensors costs a handful of vkAllocateMemory
// calls (drivers limit the count, maxMemoryAllocationCount, often to 4096). Larger requests get a
// block of their own.
const blockSize = 256 << 20

// memBlock is one vkAllocateMemory allocation and its free list (sorted, coalesced spans).
type memBlock struct {
	mem       vk.DeviceMemory
	size      uint64
	typeIndex uint32
	mapped    unsafe.Pointer // whole block mapped when its type is host-visible
	free      []span
}

type span struct{ off, size uint64 }

// allocation is a sub-range of a block.
type allocation struct {
	blk       *memBlock
	off, size uint64
}

// allocator sub-allocates buffer memory from large blocks per memory type.
type allocator struct {
	d      *Device
	mu     sync.Mutex
	blocks []*memBlock
	inUse  uint64 // bytes handed out to buffers
	heaps  []uint64
}

func newAllocator(d *Device) *allocator {
	return &allocator{d: d, heaps: make([]uint64, d.memProps.MemoryHeapCount)}
}

// findType picks a memory type allowed by bits that has every flag in need, preferring types that
// also have the flags in want.
func (a *allocator) findType(bits uint32, need, want vk.MemoryPropertyFlagBits) (uint32, bool) {
	best, found := uint32(0), false
	for i := uint32(0); i < a.d.memProps.MemoryTypeCount; i++ {
		if bits&(1<<i) == 0 {
			continue
		}
		f := a.d.memProps.MemoryTypes[i].PropertyFlags
		if f&vk.MemoryPropertyFlags(need) != vk.MemoryPropertyFlags(need) {
			continue
		}
		if !found || (f&vk.MemoryPropertyFlags(want) == vk.MemoryPropertyFlags(want) &&
			a.d.memProps.MemoryTypes[best].PropertyFlags&vk.MemoryPropertyFlags(want) != vk.MemoryPropertyFlags(want)) {
			best, found = i, true
		}
	}
	return best, found
}

// memType is what deviceLocalOrder needs to know of one Vulkan memory type.
type memType struct {
	flags vk.MemoryPropertyFlags
	heap  uint32
}

// deviceLocalOrder lists, best first, the memory types (indices into types, allowed by bits) a
// device-local buffer may live in, given the heaps' sizes in bytes:
//
//  1. DEVICE_LOCAL types on the largest device-local heap that are also HOST_VISIBLE and
//     HOST_COHERENT — unified memory (integrated GPUs, lavapipe, SwiftShader) or a discrete GPU
//     with resizable BAR: the host writes them directly, no staging copy;
//  2. the other DEVICE_LOCAL types on that heap — a discrete GPU's VRAM, filled through the
//     staging buffer;
//  3. DEVICE_LOCAL types on other heaps, those without HOST_VISIBLE first — a discrete GPU's
//     256 MiB host-visible BAR window comes last, so weights never land there first and fail once
//     it is full (the allocator moves on to the next type when one runs out).
//
// With hideHostVisible (BITGPU_DISABLE=host-visible-vram) HOST_VISIBLE is ignored when ranking,
// as on a discrete GPU without resizable BAR. Types that are not DEVICE_LOCAL are never listed:
// bitgpu does not spill to system memory behind the user's back.
func deviceLocalOrder(types []memType, heapSizes []uint64, bits uint32, hideHostVisible bool) []uint32 {
	dl := vk.MemoryPropertyFlags(vk.MemoryPropertyDeviceLocalBit)
	hv := vk.MemoryPropertyFlags(vk.MemoryPropertyHostVisibleBit | vk.MemoryPropertyHostCoherentBit)
	var big uint32
	found := false
	for _, t := range types {
		if t.flags&dl != 0 && (!found || heapSizes[t.heap] > heapSizes[big]) {
			big, found = t.heap, true
		}
	}
	rank := func(t memType) int {
		visible := t.flags&hv == hv && !hideHostVisible
		switch {
		case t.heap == big && visible:
			return 0
		case t.heap == big:
			return 1
		case t.flags&vk.MemoryPropertyFlags(vk.MemoryPropertyHostVisibleBit) == 0 || hideHostVisible:
			return 2
		}
		return 3
	}
	var order []uint32
	for r := 0; r <= 3; r++ {
		for i, t := range types {
			if bits&(1<<uint(i)) != 0 && t.flags&dl != 0 && rank(t) == r {
				order = append(order, uint32(i))
			}
		}
	}
	return order
}

// memTypes returns the device's memory types and heap sizes for deviceLocalOrder.
func (d *Device) memTypes() ([]memType, []uint64) {
	types := make([]memType, d.memProps.MemoryTypeCount)
	for i := range types {
		types[i] = memType{flags: d.memProps.MemoryTypes[i].PropertyFlags, heap: d.memProps.MemoryTypes[i].HeapIndex}
	}
	heaps := make([]uint64, d.memProps.MemoryHeapCount)
	for i := range heaps {
		heaps[i] = uint64(d.memProps.MemoryHeaps[i].Size)
	}
	return types, heaps
}

func alignUp(x, a uint64) uint64 {
	if a <= 1 {
		return x
	}
	return (x + a - 1) / a * a
}

// alloc returns size bytes aligned to align from a block of memory type typeIndex.
func (a *allocator) alloc(typeIndex uint32, size, align uint64) (allocation, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, b := range a.blocks {
		if b.typeIndex != typeIndex {
			continue
		}
		if al, ok := b.take(size, align); ok {
			a.inUse += size
			return al, nil
		}
	}
	bs := uint64(blockSize)
	if size > bs {
		bs = alignUp(size, 1<<20)
	}
	heap := a.d.memProps.MemoryTypes[typeIndex].HeapIndex
	heapSize := uint64(a.d.memProps.MemoryHeaps[heap].Size)
	if a.heaps[heap]+bs > heapSize && a.heaps[heap]+size <= heapSize {
		bs = alignUp(size, 1<<20)
		if a.heaps[heap]+bs > heapSize {
			bs = size
		}
	}
	oom := func() error {
		free := uint64(0)
		if heapSize > a.heaps[heap] {
			free = heapSize - a.heaps[heap]
		}
		return fmt.Errorf("out of device memory: cannot allocate %s (heap %d has %s free of %s, %s in use by bitgpu buffers)",
			FormatBytes(size), heap, FormatBytes(free), FormatBytes(heapSize), FormatBytes(a.inUse))
	}
	if a.heaps[heap]+bs > heapSize {
		return allocation{}, oom()
	}
	var mem vk.DeviceMemory
	r := vk.AllocateMemory(a.d.dev, &vk.MemoryAllocateInfo{
		SType:           vk.StructureTypeMemoryAllocateInfo,
		AllocationSize:  vk.DeviceSize(bs),
		MemoryTypeIndex: typeIndex,
	}, nil, &mem)
	if r == vk.ErrorOutOfDeviceMemory || r == vk.ErrorOutOfHostMemory {
		return allocation{}, oom()
	}
	if err := check(r, "vkAllocateMemory"); err != nil {
		return allocation{}, err
	}
	b := &memBlock{mem: mem, size: bs, typeIndex: typeIndex, free: []span{{0, bs}}}
	if a.d.memProps.MemoryTypes[typeIndex].PropertyFlags&vk.MemoryPropertyFlags(vk.MemoryPropertyHostVisibleBit) != 0 {
		var p unsafe.Pointer
		if err := check(vk.MapMemory(a.d.dev, mem, 0, vk.DeviceSize(bs), 0, &p), "vkMapMemory"); err != nil {
			vk.FreeMemory(a.d.dev, mem, nil)
			return allocation{}, err
		}
		b.mapped = p
	}
	a.blocks = append(a.blocks, b)
	a.heaps[heap] += bs
	al, _ := b.take(size, align)
	a.inUse += size
	return al, nil
}

// take carves size bytes aligned to align out of the first span that fits (first fit).
func (b *memBlock) take(size, align uint64) (allocation, bool) {
	for i, s := range b.free {
		start := alignUp(s.off, align)
		end := start + size
		if end > s.off+s.size {
			continue
		}
		var rest []span
		if start > s.off {
			rest = append(rest, span{s.off, start - s.off})
		}
		if end < s.off+s.size {
			rest = append(rest, span{end, s.off + s.size - end})
		}
		b.free = append(b.free[:i], append(rest, b.free[i+1:]...)...)
		return allocation{blk: b, off: start, size: size}, true
	}
	return allocation{}, false
}

// release returns an allocation to its block's free list, coalescing neighbours.
func (a *allocator) release(al allocation) {
	if al.blk == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	b := al.blk
	b.free = append(b.free, span{al.off, al.size})
	sort.Slice(b.free, func(i, j int) bool { return b.free[i].off < b.free[j].off })
	merged := b.free[:1]
	for _, s := range b.free[1:] {
		last := &merged[len(merged)-1]
		if last.off+last.size == s.off {
			last.size += s.size
		} else {
			merged = append(merged, s)
		}
	}
	b.free = merged
	a.inUse -= al.size
}

func (a *allocator) destroy() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, b := range a.blocks {
		if b.mapped != nil {
			vk.UnmapMemory(a.d.dev, b.mem)
		}
		vk.FreeMemory(a.d.dev, b.mem, nil)
	}
	a.blocks = nil
}

// MemoryInUse reports the bytes currently held by live buffers, and the bytes reserved from
// Vulkan in blocks (in-use plus free space inside the blocks).
func (d *Device) MemoryInUse() (inUse, reserved uint64) {
	d.alloc.mu.Lock()
	defer d.alloc.mu.Unlock()
	for _, h := range d.alloc.heaps {
		reserved += h
	}
	return d.alloc.inUse, reserved
}
