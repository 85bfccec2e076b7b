package gpu

/*
#include <stdlib.h>
#include <string.h>
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	vk "github.com/goki/vulkan"
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
	var setLayout vk.DescriptorSetLayout
	bindings := make([]vk.DescriptorSetLayoutBinding, k.spec.Bindings)
	for i := range bindings {
		bindings[i] = vk.DescriptorSetLayoutBinding{
			Binding:         uint32(i),
			DescriptorType:  vk.DescriptorTypeStorageBuffer,
			DescriptorCount: 1,
			StageFlags:      vk.ShaderStageFlags(vk.ShaderStageComputeBit),
		}
	}
	if err := check(vk.CreateDescriptorSetLayout(d.dev, &vk.DescriptorSetLayoutCreateInfo{
		SType:        vk.StructureTypeDescriptorSetLayoutCreateInfo,
		BindingCount: uint32(len(bindings)),
		PBindings:    bindings,
	}, nil, &setLayout), "vkCreateDescriptorSetLayout"); err != nil {
		return err
	}
	k.setLayout = setLayout
	stepLayout, err := d.stepSetLayout()
	if err != nil {
		return err
	}
	pl := vk.PipelineLayoutCreateInfo{
		SType:          vk.StructureTypePipelineLayoutCreateInfo,
		SetLayoutCount: 2,
		PSetLayouts:    []vk.DescriptorSetLayout{k.setLayout, stepLayout},
	}
	if k.spec.PushSize > 0 {
		pl.PushConstantRangeCount = 1
		pl.PPushConstantRanges = []vk.PushConstantRange{{StageFlags: vk.ShaderStageFlags(vk.ShaderStageComputeBit), Size: k.spec.PushSize}}
	}
	var layout vk.PipelineLayout
	if err := check(vk.CreatePipelineLayout(d.dev, &pl, nil, &layout), "vkCreatePipelineLayout"); err != nil {
		return err
	}
	k.layout = layout

	code := make([]uint32, len(k.spec.SPIRV)/4)
	for i := range code {
		code[i] = binary.LittleEndian.Uint32(k.spec.SPIRV[4*i:])
	}
	var module vk.ShaderModule
	if err := check(vk.CreateShaderModule(d.dev, &vk.ShaderModuleCreateInfo{
		SType:    vk.StructureTypeShaderModuleCreateInfo,
		CodeSize: uint64(len(k.spec.SPIRV)),
		PCode:    code,
	}, nil, &module), "vkCreateShaderModule"); err != nil {
		return err
	}
	defer vk.DestroyShaderModule(d.dev, module, nil)

	values := append([]uint32{k.localX, k.localY, d.info.SubgroupSize}, k.spec.Spec...)
	entries := make([]vk.SpecializationMapEntry, len(values))
	for i := range values {
		entries[i] = vk.SpecializationMapEntry{ConstantID: uint32(i), Offset: uint32(4 * i), Size: 4}
	}
	// The specialization data lives in C memory: the binding copies the structs to C, and C
	// memory must not point into the Go heap.
	data := C.malloc(C.size_t(4 * len(values)))
	defer C.free(data)
	C.memcpy(data, unsafe.Pointer(&values[0]), C.size_t(4*len(values)))
	pipes := make([]vk.Pipeline, 1)
	if err := check(vk.CreateComputePipelines(d.dev, d.cache, 1, []vk.ComputePipelineCreateInfo{{
		SType: vk.StructureTypeComputePipelineCreateInfo,
		Stage: vk.PipelineShaderStageCreateInfo{
			SType:  vk.StructureTypePipelineShaderStageCreateInfo,
			Stage:  vk.ShaderStageComputeBit,
			Module: module,
			PName:  "main\x00",
			PSpecializationInfo: []vk.SpecializationInfo{{
				MapEntryCount: uint32(len(entries)),
				PMapEntries:   entries,
				DataSize:      uint64(4 * len(values)),
				PData:         data,
			}},
		},
		Layout: k.layout,
	}}, nil, pipes), "vkCreateComputePipelines"); err != nil {
		return err
	}
	k.pipeline = pipes[0]
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
	var sl vk.DescriptorSetLayout
	err := check(vk.CreateDescriptorSetLayout(d.dev, &vk.DescriptorSetLayoutCreateInfo{
		SType:        vk.StructureTypeDescriptorSetLayoutCreateInfo,
		BindingCount: 1,
		PBindings: []vk.DescriptorSetLayoutBinding{{
			Binding:         0,
			DescriptorType:  vk.DescriptorTypeUniformBuffer,
			DescriptorCount: 1,
			StageFlags:      vk.ShaderStageFlags(vk.ShaderStageComputeBit),
		}},
	}, nil, &sl), "vkCreateDescriptorSetLayout")
	d.stepLayout = sl
	return sl, err
}

// pipelineCachePath is where the pipeline cache persists between runs: $BITGPU_PIPELINE_CACHE,
// or <user cache dir>/bitgpu/pipelines-<vendor>-<device>.bin; "off" disables persistence. The
// driver validates the blob's header (vendor, device, cache UUID) and ignores a stale one.
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
		blob, _ = os.ReadFile(p) // a missing or unreadable cache only costs compile time
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

// savePipelineCache writes the cache blob atomically (temp file + rename); failures are ignored
// because the cache is only an accelerator.
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
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".pipelines-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(blob)
	cerr := tmp.Close()
	if werr != nil || cerr != nil || os.Rename(tmp.Name(), p) != nil {
		os.Remove(tmp.Name())
	}
}
