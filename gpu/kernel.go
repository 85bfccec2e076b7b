//go:build cgo

package gpu

/*
#include <stdlib.h>
#include <string.h>
#include "vkshim.h"
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"unsafe"

	vk "github.com/goki/vulkan"

	"github.com/bitgpu/bitgpu/internal/fsutil"
)

// Specialization constant ids every bitgpu shader shares (declare only the ones a shader uses):
//
//	layout(local_size_x_id = 0, local_size_y_id = 1) in;
//	layout(constant_id = 2) const uint SUBGROUP_SIZE = 32;
//	layout(constant_id = 3...) kernel-specific constants (KernelSpec.Spec).
const (
	SpecLocalSizeX  = 0
	SpecLocalSizeY  = 1
	SpecSubgroup    = 2
	SpecFirstCustom = 3
)

// StepSlots is the number of uint32 step values a Sequence carries to every dispatch through the
// uniform block at set 1, binding 0 (`layout(set = 1, binding = 0) uniform Step { uvec4 step[4]; }`).
const StepSlots = 16

// KernelSpec describes a compute kernel: its SPIR-V, its storage-buffer bindings (set 0, bindings
// 0..Bindings-1, one Range each at dispatch), the push-constant block size in bytes, the workgroup
// size, and extra specialization constants.
type KernelSpec struct {
	Name      string // for errors and profiles
	SPIRV     []byte
	Bindings  int
	Outputs   []int  // bindings the kernel writes; the others are read-only (drives barriers)
	PushSize  uint32 // bytes, multiple of 4
	LocalSize [2]uint32
	Spec      []uint32 // values of constant_id SpecFirstCustom, SpecFirstCustom+1, ...
}

// Kernel is a compute pipeline with its layouts. Release it with Release (or Device.Close).
type Kernel struct {
	d         *Device
	spec      KernelSpec
	setLayout vk.DescriptorSetLayout
	layout    vk.PipelineLayout
	pipeline  vk.Pipeline
	writes    uint64 // bitmask of output bindings
	localX    uint32
	localY    uint32
}

// Name is the kernel's name.
func (k *Kernel) Name() string { return k.spec.Name }

// LocalSize is the workgroup size (x, y) the pipeline was built with.
func (k *Kernel) LocalSize() (x, y uint32) { return k.localX, k.localY }

// NewKernel builds a compute pipeline from spec through the device's pipeline cache. LocalSize
// zero means (256, 1), capped at the device's maximum. Errors name the kernel.
func (d *Device) NewKernel(spec KernelSpec) (*Kernel, error) {
	k := &Kernel{d: d, spec: spec, localX: spec.LocalSize[0], localY: spec.LocalSize[1]}
	if k.localX == 0 {
		k.localX = 256
	}
	if k.localY == 0 {
		k.localY = 1
	}
	if k.localX > d.info.MaxWorkgroupSize[0] {
		k.localX = d.info.MaxWorkgroupSize[0]
	}
	if k.localX*k.localY > d.info.MaxWorkgroupInvocations {
		return nil, fmt.Errorf("kernel %s: workgroup %dx%d exceeds the device's %d invocations", spec.Name, k.localX, k.localY, d.info.MaxWorkgroupInvocations)
	}
	if len(spec.SPIRV) == 0 || len(spec.SPIRV)%4 != 0 || binary.LittleEndian.Uint32(spec.SPIRV) != 0x07230203 {
		return nil, fmt.Errorf("kernel %s: not a SPIR-V module (%d bytes)", spec.Name, len(spec.SPIRV))
	}
	if spec.PushSize%4 != 0 || spec.PushSize > d.info.MaxPushConstantsSize {
		return nil, fmt.Errorf("kernel %s: push constants of %d bytes (multiple of 4, at most %d)", spec.Name, spec.PushSize, d.info.MaxPushConstantsSize)
	}
	for _, o := range spec.Outputs {
		if o < 0 || o >= spec.Bindings {
			return nil, fmt.Errorf("kernel %s: output binding %d out of %d bindings", spec.Name, o, spec.Bindings)
		}
		k.writes |= 1 << uint(o)
	}
	if err := k.build(); err != nil {
		k.Release()
		return nil, fmt.Errorf("kernel %s: %w", spec.Name, err)
	}
	d.track(k, k.Release)
	return k, nil
}

func (k *Kernel) build() error {
	d := k.d
	cdev := (C.VkDevice)(ptr(d.dev))
	var setLayout C.VkDescriptorSetLayout
	if err := check(vk.Result(C.bitgpu_create_set_layout(cdev, C.uint32_t(k.spec.Bindings), C.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, &setLayout)), "vkCreateDescriptorSetLayout"); err != nil {
		return err
	}
	k.setLayout = handle[vk.DescriptorSetLayout](unsafe.Pointer(setLayout))
	stepLayout, err := d.stepSetLayout()
	if err != nil {
		return err
	}
	var layout C.VkPipelineLayout
	if err := check(vk.Result(C.bitgpu_create_pipeline_layout(cdev, setLayout, (C.VkDescriptorSetLayout)(ptr(stepLayout)), C.uint32_t(k.spec.PushSize), &layout)), "vkCreatePipelineLayout"); err != nil {
		return err
	}
	k.layout = handle[vk.PipelineLayout](unsafe.Pointer(layout))

	code := make([]uint32, len(k.spec.SPIRV)/4)
	for i := range code {
		code[i] = binary.LittleEndian.Uint32(k.spec.SPIRV[4*i:])
	}
	values := append([]uint32{k.localX, k.localY, d.info.SubgroupSize}, k.spec.Spec...)
	var pipe C.VkPipeline
	r := C.bitgpu_create_compute_pipeline(cdev, (C.VkPipelineCache)(ptr(d.cache)), (*C.uint32_t)(unsafe.Pointer(&code[0])), C.size_t(4*len(code)),
		(*C.uint32_t)(unsafe.Pointer(&values[0])), C.uint32_t(len(values)), layout, &pipe)
	if err := check(vk.Result(r), "vkCreateComputePipelines"); err != nil {
		return err
	}
	k.pipeline = handle[vk.Pipeline](unsafe.Pointer(pipe))
	return nil
}

// Release destroys the pipeline and its layouts. Releasing twice is harmless.
func (k *Kernel) Release() {
	d := k.d
	if d.dev == nil {
		return
	}
	if k.pipeline != nil {
		vk.DestroyPipeline(d.dev, k.pipeline, nil)
		k.pipeline = nil
	}
	if k.layout != nil {
		vk.DestroyPipelineLayout(d.dev, k.layout, nil)
		k.layout = nil
	}
	if k.setLayout != nil {
		vk.DestroyDescriptorSetLayout(d.dev, k.setLayout, nil)
		k.setLayout = nil
	}
	d.untrack(k)
}

// stepSetLayout is the shared layout of set 1: one uniform buffer holding the Sequence's step
// values. Created once per device.
func (d *Device) stepSetLayout() (vk.DescriptorSetLayout, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stepLayout != nil {
		return d.stepLayout, nil
	}
	var sl C.VkDescriptorSetLayout
	err := check(vk.Result(C.bitgpu_create_set_layout((C.VkDevice)(ptr(d.dev)), 1, C.VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER, &sl)), "vkCreateDescriptorSetLayout")
	if err != nil {
		return nil, err
	}
	d.stepLayout = handle[vk.DescriptorSetLayout](unsafe.Pointer(sl))
	return d.stepLayout, nil
}

// pipelineCachePath is where the pipeline cache persists between runs: $BITGPU_PIPELINE_CACHE,
// or <user cache dir>/bitgpu/pipelines-<vendor>-<device>.bin; "off" disables persistence. The
// driver validates the blob's header (vendor, device, cache UUID) and ignores a stale one. A path
// that is not a regular file (a FIFO, a device, a directory) is neither read — a FIFO would block —
// nor replaced.
func (d *Device) pipelineCachePath() string {
	p := os.Getenv("BITGPU_PIPELINE_CACHE")
	if p == "off" {
		return ""
	}
	if p != "" {
		return p
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "bitgpu", fmt.Sprintf("pipelines-%04x-%04x-%s.bin", d.info.VendorID, d.info.DeviceID, d.info.Driver))
}

func (d *Device) openPipelineCache() error {
	var blob []byte
	if p := d.pipelineCachePath(); p != "" {
		blob, _ = fsutil.ReadRegular(p) // a missing, unreadable or non-regular cache only costs compile time
	}
	ci := vk.PipelineCacheCreateInfo{SType: vk.StructureTypePipelineCacheCreateInfo}
	var cdata unsafe.Pointer
	if len(blob) > 0 {
		cdata = C.CBytes(blob)
		defer C.free(cdata)
		ci.InitialDataSize = uint64(len(blob))
		ci.PInitialData = cdata
	}
	var cache vk.PipelineCache
	r := vk.CreatePipelineCache(d.dev, &ci, nil, &cache)
	if r != vk.Success && len(blob) > 0 {
		ci.InitialDataSize, ci.PInitialData = 0, nil
		r = vk.CreatePipelineCache(d.dev, &ci, nil, &cache)
	}
	d.cache = cache
	return check(r, "vkCreatePipelineCache")
}

// savePipelineCache writes the cache blob atomically (fsutil.WriteAtomic: temp file + rename, never
// over a non-regular file); failures are ignored because the cache is only an accelerator.
func (d *Device) savePipelineCache() {
	p := d.pipelineCachePath()
	if p == "" {
		return
	}
	var n uint64
	if vk.GetPipelineCacheData(d.dev, d.cache, &n, nil) != vk.Success || n == 0 {
		return
	}
	buf := C.malloc(C.size_t(n))
	defer C.free(buf)
	if vk.GetPipelineCacheData(d.dev, d.cache, &n, buf) != vk.Success {
		return
	}
	blob := C.GoBytes(buf, C.int(n))
	if fsutil.CheckWriteTarget(p) != nil || os.MkdirAll(filepath.Dir(p), 0o755) != nil {
		return
	}
	_ = fsutil.WriteAtomic(p, func(w io.Writer) error { _, err := w.Write(blob); return err })
}
