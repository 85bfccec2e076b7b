//go:build cgo

// Package gpu is bitgpu's Vulkan compute layer and the only package that touches Vulkan. It offers
// a Device (instance, physical-device choice, one compute queue, optional features), Buffers
// sub-allocated from large memory blocks, Kernels (compute pipelines built from embedded SPIR-V),
// Sequences (recorded command buffers with automatic barriers, replayable with new step values)
// and Timers (timestamp queries). A user of gpu never sees a descriptor set.
//
// Bindings: github.com/goki/vulkan (Vulkan 1.3.239 headers), plus a small cgo shim (vkshim.c) for
// the Vulkan 1.1 feature/property chains and the VK_EXT_debug_utils messenger, which the binding
// cannot express.
package gpu

/*
#include "vkshim.h"
*/
import "C"

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	vk "github.com/goki/vulkan"
)

// Options choose how Open creates the device.
type Options struct {
	// Validate enables VK_LAYER_KHRONOS_validation, with synchronization validation (missing
	// barriers are reported as SYNC-HAZARD-* messages), and collects its messages (see
	// Device.ValidationMessages). Open returns an error when the layer is not installed.
	Validate bool
	// Select picks a physical device by index (as `bitgpu devices` numbers them) or by a
	// case-insensitive substring of its name. Empty picks the best: discrete > integrated >
	// virtual > CPU.
	Select string
	// Disable turns off optional features by name ("int8", "fp16", "storage8", "storage16",
	// "dot", "subgroup-size-control", "subgroup-arithmetic", "subgroup-shuffle", and
	// "host-visible-vram": device-local memory treated as not host-visible, as on a discrete GPU
	// without resizable BAR, so every upload goes through staging) so their 32-bit fallbacks can be
	// exercised on any device.
	Disable []string
}

// OptionsFromEnv returns the Options set by the environment: BITGPU_VALIDATE=1 turns validation
// on, BITGPU_DEVICE=<index|name substring> selects the device, BITGPU_DISABLE=a,b disables
// optional features.
func OptionsFromEnv() Options {
	// The Vulkan loader reads these in C; reading them here too makes `go test` cache results
	// per driver instead of reusing one driver's results for another.
	_ = os.Getenv("VK_ICD_FILENAMES")
	_ = os.Getenv("VK_DRIVER_FILES")
	o := Options{Validate: os.Getenv("BITGPU_VALIDATE") == "1", Select: os.Getenv("BITGPU_DEVICE")}
	if d := os.Getenv("BITGPU_DISABLE"); d != "" {
		o.Disable = strings.Split(d, ",")
	}
	return o
}

// Features are the optional capabilities bitgpu detects and enables when present. Each has a
// 32-bit fallback, so any Vulkan 1.1 device runs every kernel.
type Features struct {
	Storage16Bit        bool // storageBuffer16BitAccess: f16/u16 loads from storage buffers
	Storage8Bit         bool // storageBuffer8BitAccess: int8/uint8 loads from storage buffers
	Int8                bool // shaderInt8: int8 arithmetic in shaders
	Float16             bool // shaderFloat16: f16 arithmetic in shaders
	Int16               bool // shaderInt16
	Int64               bool // shaderInt64
	IntegerDotProduct   bool // shaderIntegerDotProduct (VK_KHR_shader_integer_dot_product)
	Dot4x8Accelerated   bool // packed signed 4x8 dot product reported as hardware-accelerated
	SubgroupSizeControl bool // VK_EXT_subgroup_size_control
	SubgroupArithmetic  bool // subgroupAdd/Max/... in compute shaders
	SubgroupShuffle     bool // subgroupShuffleXor/... in compute shaders
}

// Heap is one Vulkan memory heap. Size is in bytes.
type Heap struct {
	Size        uint64
	DeviceLocal bool
}

// Info describes a physical device: identity, memory heaps, compute limits and features.
// Sizes are in bytes; TimestampPeriod is nanoseconds per timestamp tick.
type Info struct {
	Index         int // position in the driver's enumeration order
	Name          string
	Type          string // "discrete", "integrated", "virtual", "cpu" or "other"
	Driver        string // driver name (VkPhysicalDeviceDriverProperties), e.g. "llvmpipe"
	DriverInfo    string
	APIVersion    string // e.g. "1.3.230"
	DriverVersion uint32
	VendorID      uint32
	DeviceID      uint32
	Heaps         []Heap

	SubgroupSize    uint32 // default subgroup size of compute shaders
	MinSubgroupSize uint32 // with subgroup size control; 0 otherwise
	MaxSubgroupSize uint32

	MaxWorkgroupSize        [3]uint32
	MaxWorkgroupInvocations uint32
	MaxWorkgroupCount       [3]uint32
	MaxSharedMemory         uint32 // maxComputeSharedMemorySize
	MaxStorageBufferRange   uint64 // largest range one storage-buffer binding may cover
	StorageBufferAlignment  uint64 // minStorageBufferOffsetAlignment
	MaxPushConstantsSize    uint32
	TimestampPeriod         float32 // ns per tick
	TimestampValidBits      uint32  // of the compute queue; 0 = no timestamps

	Features Features
}

// String is a one-line summary: name, type and driver.
func (i Info) String() string {
	return fmt.Sprintf("%s (%s, %s)", i.Name, i.Type, i.Driver)
}

// Device is an open Vulkan device with one compute queue. Methods are safe for concurrent use
// except where noted; Close must be called once when done.
type Device struct {
	info Info

	instance    vk.Instance
	messenger   C.VkDebugUtilsMessengerEXT
	log         *validationLog
	logKey      uintptr
	phys        vk.PhysicalDevice
	dev         vk.Device
	queue       vk.Queue
	queueFamily uint32
	cmdPool     vk.CommandPool
	cache       vk.PipelineCache
	memProps    vk.PhysicalDeviceMemoryProperties
	alloc       *allocator

	mu         sync.Mutex // guards queue submission, cmdPool, staging and stepLayout
	staging    *Buffer
	stepLayout vk.DescriptorSetLayout
	closed     bool

	forceStaging bool // tests: route device-local transfers through the staging buffer
	// hideHostVisibleVRAM (BITGPU_DISABLE=host-visible-vram) treats device-local memory as not
	// host-visible, as on a discrete GPU without resizable BAR: every device-local buffer is
	// filled and read through the staging buffer.
	hideHostVisibleVRAM bool

	objMu   sync.Mutex
	objects map[any]func() // live kernels, sequences, timers and buffers, released by Close
}

// track registers an object Close must release if the caller did not.
func (d *Device) track(key any, release func()) {
	d.objMu.Lock()
	if d.objects == nil {
		d.objects = map[any]func(){}
	}
	d.objects[key] = release
	d.objMu.Unlock()
}

func (d *Device) untrack(key any) {
	d.objMu.Lock()
	delete(d.objects, key)
	d.objMu.Unlock()
}

// releaseAll releases every tracked object: sequences and timers first, then kernels and buffers.
func (d *Device) releaseAll() {
	for pass := 0; pass < 2; pass++ {
		d.objMu.Lock()
		var fns []func()
		for k, f := range d.objects {
			_, isBuf := k.(*Buffer)
			_, isKernel := k.(*Kernel)
			if (pass == 0) != (isBuf || isKernel) {
				fns = append(fns, f)
			}
		}
		d.objMu.Unlock()
		for _, f := range fns {
			f()
		}
	}
}

// Live counts the objects created on a Device and not yet released, and the bytes their buffers
// asked for (the sum of the sizes passed to NewBuffer/NewHostBuffer). The device's own staging
// buffer and the step blocks owned by sequences are not counted.
type Live struct {
	Buffers, Kernels, Sequences, Timers int
	BufferBytes                         uint64
}

// Objects is the number of live objects of every kind.
func (l Live) Objects() int { return l.Buffers + l.Kernels + l.Sequences + l.Timers }

// String lists the live objects, e.g. "2 buffers (4096 bytes), 1 kernels, 0 sequences, 0 timers".
func (l Live) String() string {
	return fmt.Sprintf("%d buffers (%d bytes), %d kernels, %d sequences, %d timers",
		l.Buffers, l.BufferBytes, l.Kernels, l.Sequences, l.Timers)
}

// Live reports the objects created on d that their owners have not released yet.
func (d *Device) Live() Live {
	d.objMu.Lock()
	defer d.objMu.Unlock()
	var l Live
	for k := range d.objects {
		switch o := k.(type) {
		case *Buffer:
			l.Buffers++
			l.BufferBytes += o.size
		case *Kernel:
			l.Kernels++
		case *Sequence:
			l.Sequences++
		case *Timer:
			l.Timers++
		}
	}
	return l
}

// Info reports the device's identity, limits and enabled features.
func (d *Device) Info() Info { return d.info }

// ValidationMessages returns every message the validation layer reported so far (empty when
// validation is off). Tests fail on any.
func (d *Device) ValidationMessages() []string {
	if d.log == nil {
		return nil
	}
	return d.log.snapshot()
}

// instanceHandle wraps instance creation shared by Open and Enumerate.
type instanceHandle struct {
	inst      vk.Instance
	messenger C.VkDebugUtilsMessengerEXT
	log       *validationLog
	logKey    uintptr
}

func newInstance(validate bool) (*instanceHandle, error) {
	if err := loadVulkan(); err != nil {
		return nil, err
	}
	h := &instanceHandle{}
	v := C.int(0)
	if validate {
		v = 1
		h.log = &validationLog{}
		h.logKey = registerLog(h.log)
	}
	var ci C.VkInstance
	r := vkResult(C.bitgpu_create_instance(v, C.uintptr_t(h.logKey), &ci))
	if r != vk.Success {
		unregisterLog(h.logKey)
		if r == vk.ErrorLayerNotPresent {
			return nil, fmt.Errorf("vkCreateInstance: validation requested but VK_LAYER_KHRONOS_validation is not installed (Debian: vulkan-validationlayers)")
		}
		if r == vk.ErrorIncompatibleDriver {
			return nil, fmt.Errorf("%w: vkCreateInstance found no compatible driver (check VK_ICD_FILENAMES / VK_DRIVER_FILES)", ErrNoDevice)
		}
		return nil, check(r, "vkCreateInstance")
	}
	h.inst = vk.Instance(unsafe.Pointer(ci))
	C.bitgpu_load_device_fns(ci)
	if err := vk.InitInstance(h.inst); err != nil {
		h.destroy()
		return nil, err
	}
	if validate {
		if r := vkResult(C.bitgpu_create_messenger(ci, C.uintptr_t(h.logKey), &h.messenger)); r != vk.Success {
			h.destroy()
			return nil, check(r, "vkCreateDebugUtilsMessengerEXT")
		}
	}
	return h, nil
}

func (h *instanceHandle) cinst() C.VkInstance { return C.VkInstance(unsafe.Pointer(h.inst)) }

func (h *instanceHandle) destroy() {
	if h.inst != nil {
		if h.messenger != nil {
			C.bitgpu_destroy_messenger(h.cinst(), h.messenger)
			h.messenger = nil
		}
		C.bitgpu_destroy_instance(h.cinst())
		h.inst = nil
	}
	// The log stays registered until here so messages emitted while the instance is destroyed
	// (leak reports) are still collected.
	unregisterLog(h.logKey)
}

func (h *instanceHandle) physicalDevices() ([]vk.PhysicalDevice, error) {
	var n uint32
	if err := check(vk.EnumeratePhysicalDevices(h.inst, &n, nil), "vkEnumeratePhysicalDevices"); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: the Vulkan loader found no device (check VK_ICD_FILENAMES / VK_DRIVER_FILES)", ErrNoDevice)
	}
	pds := make([]vk.PhysicalDevice, n)
	if err := check(vk.EnumeratePhysicalDevices(h.inst, &n, pds), "vkEnumeratePhysicalDevices"); err != nil {
		return nil, err
	}
	return pds[:n], nil
}

var typeNames = map[uint32]string{0: "other", 1: "integrated", 2: "discrete", 3: "virtual", 4: "cpu"}
var typeRank = map[string]int{"discrete": 0, "integrated": 1, "virtual": 2, "cpu": 3, "other": 4}

// queryInfo reads everything bitgpu needs about pd; caps is returned for device creation.
func (h *instanceHandle) queryInfo(index int, pd vk.PhysicalDevice) (Info, C.bitgpu_caps, uint32) {
	var caps C.bitgpu_caps
	C.bitgpu_query_caps(h.cinst(), C.VkPhysicalDevice(unsafe.Pointer(pd)), &caps)

	var props vk.PhysicalDeviceProperties
	vk.GetPhysicalDeviceProperties(pd, &props)
	props.Deref()
	props.Limits.Deref()
	lim := props.Limits

	var mp vk.PhysicalDeviceMemoryProperties
	vk.GetPhysicalDeviceMemoryProperties(pd, &mp)
	mp.Deref()
	var heaps []Heap
	for i := uint32(0); i < mp.MemoryHeapCount; i++ {
		hp := mp.MemoryHeaps[i]
		hp.Deref()
		heaps = append(heaps, Heap{Size: uint64(hp.Size), DeviceLocal: hp.Flags&vk.MemoryHeapFlags(vk.MemoryHeapDeviceLocalBit) != 0})
	}

	family, tsBits := uint32(caps.computeFamily), uint32(caps.timestampBits)
	api := uint32(caps.apiVersion)
	info := Info{
		Index:                   index,
		Name:                    C.GoString(&caps.deviceName[0]),
		Type:                    typeNames[uint32(caps.deviceType)],
		Driver:                  C.GoString(&caps.driverName[0]),
		DriverInfo:              C.GoString(&caps.driverInfo[0]),
		APIVersion:              fmt.Sprintf("%d.%d.%d", api>>22, (api>>12)&0x3ff, api&0xfff),
		DriverVersion:           uint32(caps.driverVersion),
		VendorID:                uint32(caps.vendorID),
		DeviceID:                uint32(caps.deviceID),
		Heaps:                   heaps,
		SubgroupSize:            uint32(caps.subgroupSize),
		MinSubgroupSize:         uint32(caps.minSubgroupSize),
		MaxSubgroupSize:         uint32(caps.maxSubgroupSize),
		MaxWorkgroupSize:        lim.MaxComputeWorkGroupSize,
		MaxWorkgroupInvocations: lim.MaxComputeWorkGroupInvocations,
		MaxWorkgroupCount:       lim.MaxComputeWorkGroupCount,
		MaxSharedMemory:         lim.MaxComputeSharedMemorySize,
		MaxStorageBufferRange:   uint64(lim.MaxStorageBufferRange),
		StorageBufferAlignment:  uint64(lim.MinStorageBufferOffsetAlignment),
		MaxPushConstantsSize:    lim.MaxPushConstantsSize,
		TimestampPeriod:         lim.TimestampPeriod,
		TimestampValidBits:      tsBits,
	}
	if info.Type == "" {
		info.Type = "other"
	}
	if info.Driver == "" {
		info.Driver = "unknown"
	}
	const computeStage = 0x20      // VK_SHADER_STAGE_COMPUTE_BIT
	const arithmeticOp = 0x4       // VK_SUBGROUP_FEATURE_ARITHMETIC_BIT
	const basicBallotShuffle = 0x1 // VK_SUBGROUP_FEATURE_BASIC_BIT
	const shuffleOp = 0x10         // VK_SUBGROUP_FEATURE_SHUFFLE_BIT
	info.Features = Features{
		Storage16Bit:        caps.storageBuffer16BitAccess != 0,
		Storage8Bit:         caps.storageBuffer8BitAccess != 0,
		Int8:                caps.shaderInt8 != 0,
		Float16:             caps.shaderFloat16 != 0,
		Int16:               caps.shaderInt16 != 0,
		Int64:               caps.shaderInt64 != 0,
		IntegerDotProduct:   caps.integerDotProduct != 0,
		Dot4x8Accelerated:   caps.dot4x8PackedSignedAccelerated != 0,
		SubgroupSizeControl: caps.subgroupSizeControl != 0,
		SubgroupArithmetic: uint32(caps.subgroupStages)&computeStage != 0 &&
			uint32(caps.subgroupOps)&(arithmeticOp|basicBallotShuffle) == arithmeticOp|basicBallotShuffle,
		SubgroupShuffle: uint32(caps.subgroupStages)&computeStage != 0 &&
			uint32(caps.subgroupOps)&(shuffleOp|basicBallotShuffle) == shuffleOp|basicBallotShuffle,
	}
	return info, caps, family
}

// Enumerate lists every Vulkan physical device in the driver's order. It returns an error
// wrapping ErrNoDevice when there is no loader or no device.
func Enumerate() ([]Info, error) {
	h, err := newInstance(false)
	if err != nil {
		return nil, err
	}
	defer h.destroy()
	pds, err := h.physicalDevices()
	if err != nil {
		return nil, err
	}
	infos := make([]Info, len(pds))
	for i, pd := range pds {
		infos[i], _, _ = h.queryInfo(i, pd)
	}
	return infos, nil
}

// Choose returns the index in infos of the device sel names (an index or a case-insensitive name
// substring, as BITGPU_DEVICE), or with sel empty the best by type: discrete > integrated >
// virtual > cpu. It returns an error naming sel when nothing matches.
func Choose(infos []Info, sel string) (int, error) {
	if sel != "" {
		if idx, err := strconv.Atoi(sel); err == nil {
			if idx < 0 || idx >= len(infos) {
				return 0, fmt.Errorf("BITGPU_DEVICE=%s: no device with that index (%d devices)", sel, len(infos))
			}
			return idx, nil
		}
		for i, in := range infos {
			if strings.Contains(strings.ToLower(in.Name), strings.ToLower(sel)) {
				return i, nil
			}
		}
		return 0, fmt.Errorf("BITGPU_DEVICE=%s: no device name contains it", sel)
	}
	order := make([]int, len(infos))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return typeRank[infos[order[a]].Type] < typeRank[infos[order[b]].Type]
	})
	return order[0], nil
}

// Open creates a Device on the chosen physical device with every detected optional feature
// enabled (minus opts.Disable). It returns an error wrapping ErrNoDevice when there is no
// Vulkan loader or device, and a descriptive error when the device has no compute queue.
func Open(opts Options) (*Device, error) {
	h, err := newInstance(opts.Validate)
	if err != nil {
		return nil, err
	}
	d := &Device{instance: h.inst, messenger: h.messenger, log: h.log, logKey: h.logKey}
	fail := func(err error) (*Device, error) {
		d.Close()
		return nil, err
	}
	pds, err := h.physicalDevices()
	if err != nil {
		return fail(err)
	}
	infos := make([]Info, len(pds))
	capsAll := make([]C.bitgpu_caps, len(pds))
	families := make([]uint32, len(pds))
	for i, pd := range pds {
		infos[i], capsAll[i], families[i] = h.queryInfo(i, pd)
	}
	idx, err := Choose(infos, opts.Select)
	if err != nil {
		return fail(err)
	}
	d.info, d.phys, d.queueFamily = infos[idx], pds[idx], families[idx]
	if d.queueFamily == ^uint32(0) {
		return fail(fmt.Errorf("device %s has no compute queue", d.info.Name))
	}
	caps := capsAll[idx]
	for _, name := range opts.Disable {
		if strings.TrimSpace(name) == "host-visible-vram" {
			d.hideHostVisibleVRAM = true
			continue
		}
		if err := disableFeature(&d.info.Features, &caps, strings.TrimSpace(name)); err != nil {
			return fail(err)
		}
	}
	var cdev C.VkDevice
	r := vkResult(C.bitgpu_create_device(h.cinst(), C.VkPhysicalDevice(unsafe.Pointer(d.phys)), C.uint32_t(d.queueFamily), &caps, &cdev))
	if err := check(r, "vkCreateDevice"); err != nil {
		return fail(fmt.Errorf("%s: %w", d.info.Name, err))
	}
	d.dev = vk.Device(unsafe.Pointer(cdev))
	var queue vk.Queue
	vk.GetDeviceQueue(d.dev, d.queueFamily, 0, &queue)
	d.queue = queue

	var pool vk.CommandPool
	r = vk.CreateCommandPool(d.dev, &vk.CommandPoolCreateInfo{
		SType:            vk.StructureTypeCommandPoolCreateInfo,
		Flags:            vk.CommandPoolCreateFlags(vk.CommandPoolCreateResetCommandBufferBit),
		QueueFamilyIndex: d.queueFamily,
	}, nil, &pool)
	if err := check(r, "vkCreateCommandPool"); err != nil {
		return fail(err)
	}
	d.cmdPool = pool
	if err := d.openPipelineCache(); err != nil {
		return fail(err)
	}
	var mp vk.PhysicalDeviceMemoryProperties
	vk.GetPhysicalDeviceMemoryProperties(d.phys, &mp)
	mp.Deref()
	d.memProps = mp
	for i := range d.memProps.MemoryTypes {
		d.memProps.MemoryTypes[i].Deref()
	}
	for i := range d.memProps.MemoryHeaps {
		d.memProps.MemoryHeaps[i].Deref()
	}
	d.alloc = newAllocator(d)
	return d, nil
}

// disableFeature turns one optional feature off in both the reported Features and the caps
// passed to device creation.
func disableFeature(f *Features, caps *C.bitgpu_caps, name string) error {
	switch name {
	case "int8":
		f.Int8, caps.shaderInt8 = false, 0
		f.IntegerDotProduct, caps.integerDotProduct = false, 0
	case "fp16":
		f.Float16, caps.shaderFloat16 = false, 0
	case "storage8":
		f.Storage8Bit, caps.storageBuffer8BitAccess = false, 0
	case "storage16":
		f.Storage16Bit, caps.storageBuffer16BitAccess = false, 0
	case "dot":
		f.IntegerDotProduct, caps.integerDotProduct = false, 0
	case "subgroup-size-control":
		f.SubgroupSizeControl, caps.subgroupSizeControl = false, 0
	case "subgroup-arithmetic":
		f.SubgroupArithmetic = false
	case "subgroup-shuffle":
		f.SubgroupShuffle = false
	case "":
	default:
		return fmt.Errorf("BITGPU_DISABLE: unknown feature %q (int8, fp16, storage8, storage16, dot, subgroup-size-control, subgroup-arithmetic, subgroup-shuffle, host-visible-vram)", name)
	}
	return nil
}

// Close waits for the device to go idle and releases every Vulkan object the Device created,
// including buffers, kernels, sequences and timers the caller did not release — but those are a
// leak of their owner, so Close then returns an error wrapping ErrLeak that counts them (see
// Live). Calling Close twice is harmless.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	var leak error
	if d.dev != nil {
		vk.DeviceWaitIdle(d.dev)
		if live := d.Live(); live.Objects() > 0 {
			leak = fmt.Errorf("%w: %s", ErrLeak, live)
		}
		d.releaseAll()
		if d.staging != nil {
			d.staging.Release()
			d.staging = nil
		}
		if d.stepLayout != nil {
			vk.DestroyDescriptorSetLayout(d.dev, d.stepLayout, nil)
		}
		if d.alloc != nil {
			d.alloc.destroy()
		}
		if d.cache != nil {
			d.savePipelineCache()
			vk.DestroyPipelineCache(d.dev, d.cache, nil)
		}
		if d.cmdPool != nil {
			vk.DestroyCommandPool(d.dev, d.cmdPool, nil)
		}
		vk.DestroyDevice(d.dev, nil)
		d.dev = nil
	}
	h := instanceHandle{inst: d.instance, messenger: d.messenger, log: d.log, logKey: d.logKey}
	h.destroy()
	d.instance = nil
	return leak
}
