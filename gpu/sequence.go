//go:build cgo

package gpu

/*
#include "vkshim.h"
*/
import "C"

import (
	"fmt"
	"math"
	"unsafe"

	vk "github.com/goki/vulkan"
)

// Sequence is a recorded command buffer: dispatches with the barriers their bindings need, and
// timestamps. Recording ends at the first Submit; every later Submit replays the same commands.
// Values that change between replays (the decode position, the sequence length) travel in the
// sequence's step block — StepSlots uint32 values in host-coherent memory bound to every dispatch
// at set 1, binding 0 — set with SetStep before Submit. Push constants are recorded with the
// commands and stay fixed. (Vulkan records push-constant values into the command buffer, so the
// per-token values live in this step block instead; the command buffer is never re-recorded.)
//
// A Sequence is not safe for concurrent use.
type Sequence struct {
	d        *Device
	cb       vk.CommandBuffer
	pools    []vk.DescriptorPool
	poolLeft uint32
	step     *Buffer
	stepSet  vk.DescriptorSet
	fence    vk.Fence
	recorded bool // recording ended; Submit replays
	count    int  // dispatches recorded
	barriers int  // pipeline barriers recorded

	// Hazard tracking since the last barrier: ranges written and read by recorded dispatches.
	written []Range
	read    []Range
	timers  map[*Timer]bool

	// noAutoBarriers (tests only) makes Dispatch skip the barriers its hazard tracking asks for,
	// so a test can show that synchronization validation reports the missing barrier.
	noAutoBarriers bool
}

// setsPerPool is how many descriptor sets each descriptor pool of a Sequence holds.
const setsPerPool = 256

// maxBindings bounds the storage buffers one kernel binds (pool sizing).
const maxBindings = 16

// NewSequence starts recording a new command sequence.
func (d *Device) NewSequence() (*Sequence, error) {
	s := &Sequence{d: d, timers: map[*Timer]bool{}}
	if err := s.init(); err != nil {
		s.Release()
		return nil, err
	}
	d.track(s, s.Release)
	return s, nil
}

func (s *Sequence) init() error {
	d := s.d
	cbs := make([]vk.CommandBuffer, 1)
	d.mu.Lock()
	err := check(vk.AllocateCommandBuffers(d.dev, &vk.CommandBufferAllocateInfo{
		SType:              vk.StructureTypeCommandBufferAllocateInfo,
		CommandPool:        d.cmdPool,
		Level:              vk.CommandBufferLevelPrimary,
		CommandBufferCount: 1,
	}, cbs), "vkAllocateCommandBuffers")
	d.mu.Unlock()
	if err != nil {
		return err
	}
	s.cb = cbs[0]
	var fence vk.Fence
	if err := check(vk.CreateFence(d.dev, &vk.FenceCreateInfo{SType: vk.StructureTypeFenceCreateInfo}, nil, &fence), "vkCreateFence"); err != nil {
		return err
	}
	s.fence = fence
	step, err := d.NewHostBuffer(StepSlots * 4)
	if err != nil {
		return fmt.Errorf("step block: %w", err)
	}
	s.step = step
	d.untrack(step) // owned by the sequence
	if err := s.begin(); err != nil {
		return err
	}
	return nil
}

func (s *Sequence) begin() error {
	if err := check(vk.BeginCommandBuffer(s.cb, &vk.CommandBufferBeginInfo{SType: vk.StructureTypeCommandBufferBeginInfo}), "vkBeginCommandBuffer"); err != nil {
		return err
	}
	// Make earlier submissions' and host writes visible to this one.
	s.memoryBarrier(vk.PipelineStageComputeShaderBit|vk.PipelineStageTransferBit|vk.PipelineStageHostBit,
		vk.AccessShaderWriteBit|vk.AccessTransferWriteBit|vk.AccessHostWriteBit,
		vk.PipelineStageComputeShaderBit|vk.PipelineStageTransferBit,
		vk.AccessShaderReadBit|vk.AccessShaderWriteBit|vk.AccessTransferReadBit|vk.AccessTransferWriteBit|vk.AccessUniformReadBit)
	return nil
}

func (s *Sequence) memoryBarrier(src vk.PipelineStageFlagBits, srcAccess vk.AccessFlagBits, dst vk.PipelineStageFlagBits, dstAccess vk.AccessFlagBits) {
	C.bitgpu_cmd_barrier((C.VkCommandBuffer)(ptr(s.cb)), C.uint32_t(src), C.uint32_t(srcAccess), C.uint32_t(dst), C.uint32_t(dstAccess))
	s.barriers++
	s.written, s.read = s.written[:0], s.read[:0]
}

// Barrier records a full compute-to-compute memory barrier: every dispatch recorded after it sees
// the writes of every dispatch before it. Dispatch inserts the barriers its bindings need by
// itself; Barrier is for hazards the sequence cannot see (e.g. aliasing through other buffers).
func (s *Sequence) Barrier() {
	s.memoryBarrier(vk.PipelineStageComputeShaderBit|vk.PipelineStageTransferBit, vk.AccessShaderWriteBit|vk.AccessTransferWriteBit,
		vk.PipelineStageComputeShaderBit|vk.PipelineStageTransferBit, vk.AccessShaderReadBit|vk.AccessShaderWriteBit|vk.AccessTransferReadBit|vk.AccessTransferWriteBit)
}

func overlaps(a, b Range) bool {
	return a.Buf == b.Buf && a.Offset < b.Offset+b.Size && b.Offset < a.Offset+a.Size
}

func anyOverlap(r Range, set []Range) bool {
	for _, x := range set {
		if overlaps(r, x) {
			return true
		}
	}
	return false
}

// descriptorSet allocates a set from the sequence's pools, growing them as needed.
func (s *Sequence) descriptorSet(layout vk.DescriptorSetLayout) (vk.DescriptorSet, error) {
	cdev := (C.VkDevice)(ptr(s.d.dev))
	if len(s.pools) == 0 || s.poolLeft == 0 {
		var pool C.VkDescriptorPool
		if err := check(vk.Result(C.bitgpu_create_descriptor_pool(cdev, setsPerPool, setsPerPool*maxBindings, setsPerPool, &pool)), "vkCreateDescriptorPool"); err != nil {
			return nil, err
		}
		s.pools = append(s.pools, handle[vk.DescriptorPool](unsafe.Pointer(pool)))
		s.poolLeft = setsPerPool
	}
	var set C.VkDescriptorSet
	if err := check(vk.Result(C.bitgpu_allocate_set(cdev, (C.VkDescriptorPool)(ptr(s.pools[len(s.pools)-1])), (C.VkDescriptorSetLayout)(ptr(layout)), &set)), "vkAllocateDescriptorSets"); err != nil {
		return nil, err
	}
	s.poolLeft--
	return handle[vk.DescriptorSet](unsafe.Pointer(set)), nil
}

// Dispatch records kernel k over groups workgroups (x, y, z) with push constants push (uint32
// words; use F32 for floats) and one buffer range per binding. It inserts a memory barrier first
// when a binding reads or writes memory an earlier dispatch wrote since the last barrier, or writes
// memory an earlier dispatch read. Errors: wrong binding or push counts, a range larger than
// the device's maxStorageBufferRange or misaligned, a group count over the device limit, or a
// sequence already recorded.
func (s *Sequence) Dispatch(k *Kernel, groups [3]uint32, push []uint32, bufs ...Range) error {
	if s.recorded {
		return fmt.Errorf("kernel %s: sequence already submitted; Reset it to record again", k.spec.Name)
	}
	if len(bufs) != k.spec.Bindings {
		return fmt.Errorf("kernel %s: %d buffers for %d bindings", k.spec.Name, len(bufs), k.spec.Bindings)
	}
	if uint32(len(push)*4) != k.spec.PushSize {
		return fmt.Errorf("kernel %s: %d bytes of push constants, want %d", k.spec.Name, len(push)*4, k.spec.PushSize)
	}
	for i, g := range groups {
		if g == 0 || g > s.d.info.MaxWorkgroupCount[i] {
			return fmt.Errorf("kernel %s: %d workgroups in dimension %d (limit %d)", k.spec.Name, g, i, s.d.info.MaxWorkgroupCount[i])
		}
	}
	if len(bufs) > maxBindings {
		return fmt.Errorf("kernel %s: %d bindings, at most %d", k.spec.Name, len(bufs), maxBindings)
	}
	var (
		cbufs   [maxBindings]C.VkBuffer
		offsets [maxBindings]C.uint64_t
		ranges  [maxBindings]C.uint64_t
	)
	hazard := false
	for i, r := range bufs {
		if r.Buf == nil || r.Buf.buf == nil {
			return fmt.Errorf("kernel %s: binding %d has no buffer", k.spec.Name, i)
		}
		if r.Size == 0 || r.Offset+r.Size > r.Buf.size {
			return fmt.Errorf("kernel %s: binding %d range [%d, %d) outside buffer of %d bytes", k.spec.Name, i, r.Offset, r.Offset+r.Size, r.Buf.size)
		}
		if r.Size > s.d.info.MaxStorageBufferRange {
			return fmt.Errorf("kernel %s: binding %d covers %s, over the device's maxStorageBufferRange of %s (split the tensor)", k.spec.Name, i, FormatBytes(r.Size), FormatBytes(s.d.info.MaxStorageBufferRange))
		}
		if a := s.d.info.StorageBufferAlignment; a > 1 && r.Offset%a != 0 {
			return fmt.Errorf("kernel %s: binding %d offset %d is not a multiple of minStorageBufferOffsetAlignment %d", k.spec.Name, i, r.Offset, a)
		}
		cbufs[i], offsets[i], ranges[i] = (C.VkBuffer)(ptr(r.Buf.buf)), C.uint64_t(r.Offset), C.uint64_t(r.Size)
		writes := k.writes&(1<<uint(i)) != 0
		if anyOverlap(r, s.written) || (writes && anyOverlap(r, s.read)) {
			hazard = true
		}
	}
	if hazard && !s.noAutoBarriers {
		s.Barrier()
	}
	for i, r := range bufs {
		if k.writes&(1<<uint(i)) != 0 {
			s.written = append(s.written, r)
		} else {
			s.read = append(s.read, r)
		}
	}
	set, err := s.descriptorSet(k.setLayout)
	if err != nil {
		return fmt.Errorf("kernel %s: %w", k.spec.Name, err)
	}
	if s.stepSet == nil {
		layout, err := s.d.stepSetLayout()
		if err != nil {
			return err
		}
		if s.stepSet, err = s.descriptorSet(layout); err != nil {
			return err
		}
		stepBuf := (C.VkBuffer)(ptr(s.step.buf))
		var zero C.uint64_t
		size := C.uint64_t(StepSlots * 4)
		C.bitgpu_write_buffers((C.VkDevice)(ptr(s.d.dev)), (C.VkDescriptorSet)(ptr(s.stepSet)), C.VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER, 0, 1, &stepBuf, &zero, &size)
	}
	if len(bufs) > 0 {
		C.bitgpu_write_buffers((C.VkDevice)(ptr(s.d.dev)), (C.VkDescriptorSet)(ptr(set)), C.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 0, C.uint32_t(len(bufs)), &cbufs[0], &offsets[0], &ranges[0])
	}
	C.bitgpu_cmd_bind((C.VkCommandBuffer)(ptr(s.cb)), (C.VkPipeline)(ptr(k.pipeline)), (C.VkPipelineLayout)(ptr(k.layout)), (C.VkDescriptorSet)(ptr(set)), (C.VkDescriptorSet)(ptr(s.stepSet)))
	if len(push) > 0 {
		vk.CmdPushConstants(s.cb, k.layout, vk.ShaderStageFlags(vk.ShaderStageComputeBit), 0, uint32(len(push)*4), unsafe.Pointer(&push[0]))
	}
	vk.CmdDispatch(s.cb, groups[0], groups[1], groups[2])
	s.count++
	return nil
}

// Dispatches is the number of dispatches recorded.
func (s *Sequence) Dispatches() int { return s.count }

// Barriers is the number of pipeline barriers recorded so far: one when recording begins
// (earlier submissions' and host writes made visible), one before each dispatch that depends on
// an earlier one, and one that makes the last writes visible to the host at the first Submit.
func (s *Sequence) Barriers() int { return s.barriers }

// SetStep sets step value slot (0..StepSlots-1) read by the next Submit's dispatches.
func (s *Sequence) SetStep(slot int, v uint32) error {
	if slot < 0 || slot >= StepSlots {
		return fmt.Errorf("step slot %d outside 0..%d", slot, StepSlots-1)
	}
	*(*uint32)(unsafe.Add(s.step.ptr, 4*slot)) = v
	return nil
}

// Submit ends recording (the first time), submits the sequence to the compute queue and waits for
// it to finish. Calling it again replays the recorded commands with the current step values.
func (s *Sequence) Submit() error {
	if !s.recorded {
		// Make the last writes visible to the host (downloads of host-visible buffers).
		s.memoryBarrier(vk.PipelineStageComputeShaderBit|vk.PipelineStageTransferBit, vk.AccessShaderWriteBit|vk.AccessTransferWriteBit,
			vk.PipelineStageHostBit|vk.PipelineStageTransferBit, vk.AccessHostReadBit|vk.AccessTransferReadBit)
		if err := check(vk.EndCommandBuffer(s.cb), "vkEndCommandBuffer"); err != nil {
			return err
		}
		s.recorded = true
	}
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return s.d.submitWaitLocked(s.cb, s.fence)
}

// Reset discards the recorded commands and starts recording anew (step values are kept).
func (s *Sequence) Reset() error {
	if err := check(vk.ResetCommandBuffer(s.cb, 0), "vkResetCommandBuffer"); err != nil {
		return err
	}
	for _, p := range s.pools {
		vk.DestroyDescriptorPool(s.d.dev, p, nil)
	}
	s.pools, s.poolLeft, s.stepSet = nil, 0, nil
	s.recorded, s.count, s.barriers = false, 0, 0
	s.timers = map[*Timer]bool{}
	return s.begin()
}

// Release frees the sequence's command buffer, descriptor pools, fence and step block.
// Releasing twice is harmless.
func (s *Sequence) Release() {
	d := s.d
	if d.dev == nil || s.d == nil {
		return
	}
	for _, p := range s.pools {
		vk.DestroyDescriptorPool(d.dev, p, nil)
	}
	s.pools = nil
	if s.fence != nil {
		vk.DestroyFence(d.dev, s.fence, nil)
		s.fence = nil
	}
	if s.cb != nil {
		d.mu.Lock()
		vk.FreeCommandBuffers(d.dev, d.cmdPool, 1, []vk.CommandBuffer{s.cb})
		d.mu.Unlock()
		s.cb = nil
	}
	if s.step != nil {
		s.step.Release()
		s.step = nil
	}
	d.untrack(s)
}

// F32 is the push-constant word of a float32 value.
func F32(x float32) uint32 { return math.Float32bits(x) }

// Run records the dispatches rec makes on a fresh sequence, submits it once, waits and releases
// it: the convenient form for one-off work.
func (d *Device) Run(rec func(s *Sequence) error) error {
	s, err := d.NewSequence()
	if err != nil {
		return err
	}
	defer s.Release()
	if err := rec(s); err != nil {
		return err
	}
	return s.Submit()
}
