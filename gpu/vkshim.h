// vkshim: the few Vulkan calls bitgpu makes in C because github.com/goki/vulkan lacks them or cannot
// express them without putting Go pointers inside C structures: the Vulkan 1.1 pNext feature and
// property chains (vkGetPhysicalDeviceFeatures2 / vkGetPhysicalDeviceProperties2), instance and device
// creation with those chains, and the VK_EXT_debug_utils messenger whose callback calls back into Go.
#ifndef BITGPU_VKSHIM_H
#define BITGPU_VKSHIM_H

#include <stdint.h>
#include <vulkan/vulkan.h>

// bitgpu_caps is everything bitgpu reads about a physical device, and (as input to
// bitgpu_create_device) the optional features to enable.
typedef struct {
	uint32_t apiVersion, driverVersion, vendorID, deviceID, deviceType;
	char deviceName[VK_MAX_PHYSICAL_DEVICE_NAME_SIZE];
	char driverName[VK_MAX_DRIVER_NAME_SIZE];
	char driverInfo[VK_MAX_DRIVER_INFO_SIZE];
	uint32_t driverID;

	uint32_t subgroupSize, subgroupStages, subgroupOps;
	uint32_t minSubgroupSize, maxSubgroupSize, requiredSubgroupSizeStages;

	// Features (VkBool32 as 0/1).
	uint32_t storageBuffer16BitAccess, storageBuffer8BitAccess, shaderInt8, shaderFloat16, shaderInt16,
		shaderInt64, integerDotProduct, subgroupSizeControl, computeFullSubgroups;
	// Integer dot product properties (VkPhysicalDeviceShaderIntegerDotProductProperties).
	uint32_t dot4x8PackedSignedAccelerated, dot4x8PackedMixedAccelerated;

	// The compute queue family (the first with compute, preferring one with timestamps; ~0 if
	// none) and its timestampValidBits.
	uint32_t computeFamily, timestampBits;

	// Device extensions present (1) or not (0); core features count as present.
	uint32_t ext16BitStorage, ext8BitStorage, extFloat16Int8, extIntegerDotProduct, extSubgroupSizeControl;
} bitgpu_caps;

// bitgpu_load opens the Vulkan loader (libvulkan.so.1) and returns vkGetInstanceProcAddr, or NULL.
PFN_vkGetInstanceProcAddr bitgpu_load(void);

// bitgpu_create_instance creates a Vulkan 1.1 instance. With validate != 0 it enables
// VK_LAYER_KHRONOS_validation with synchronization validation (VK_EXT_validation_features) and
// VK_EXT_debug_utils, and chains a messenger create info so messages during instance creation and
// destruction reach the callback too (userData is passed through).
VkResult bitgpu_create_instance(int validate, uintptr_t userData, VkInstance *out);

// bitgpu_create_messenger creates the debug-utils messenger reporting warnings and errors.
VkResult bitgpu_create_messenger(VkInstance inst, uintptr_t userData, VkDebugUtilsMessengerEXT *out);
void bitgpu_destroy_messenger(VkInstance inst, VkDebugUtilsMessengerEXT m);
void bitgpu_destroy_instance(VkInstance inst);

// bitgpu_query_caps fills out for pd through the Vulkan 1.1 *2 queries.
void bitgpu_query_caps(VkInstance inst, VkPhysicalDevice pd, bitgpu_caps *out);

// bitgpu_create_device creates a device with one queue of queueFamily and the features set in enable.
VkResult bitgpu_create_device(VkInstance inst, VkPhysicalDevice pd, uint32_t queueFamily,
	const bitgpu_caps *enable, VkDevice *out);

#endif

// The calls below replace github.com/goki/vulkan's wrappers for commands that take arrays of
// structures. Those wrappers copy the arrays to C memory whose release is tied to a Go finalizer
// that can run while the Vulkan call is still reading it (a use-after-free seen as rare crashes in
// vkCreateComputePipelines). Here every structure lives on the C stack for the duration of the call.

// bitgpu_load_device_fns resolves the device-level commands below through the instance.
void bitgpu_load_device_fns(VkInstance inst);

// bitgpu_create_set_layout: n bindings 0..n-1 of one descriptor type, compute stage.
VkResult bitgpu_create_set_layout(VkDevice d, uint32_t n, VkDescriptorType type, VkDescriptorSetLayout *out);
// bitgpu_create_pipeline_layout: sets (set0, set1) and one compute push-constant range of pushSize bytes (0: none).
VkResult bitgpu_create_pipeline_layout(VkDevice d, VkDescriptorSetLayout set0, VkDescriptorSetLayout set1,
	uint32_t pushSize, VkPipelineLayout *out);
// bitgpu_create_compute_pipeline: shader module from code (codeSize bytes), entry "main", uint32
// specialization constants spec[0..nspec) with ids 0..nspec-1.
VkResult bitgpu_create_compute_pipeline(VkDevice d, VkPipelineCache cache, const uint32_t *code, size_t codeSize,
	const uint32_t *spec, uint32_t nspec, VkPipelineLayout layout, VkPipeline *out);
VkResult bitgpu_create_descriptor_pool(VkDevice d, uint32_t maxSets, uint32_t storage, uint32_t uniform,
	VkDescriptorPool *out);
VkResult bitgpu_allocate_set(VkDevice d, VkDescriptorPool pool, VkDescriptorSetLayout layout, VkDescriptorSet *out);
// bitgpu_write_buffers binds bufs[i] [offsets[i], offsets[i]+ranges[i]) to binding first+i of set.
void bitgpu_write_buffers(VkDevice d, VkDescriptorSet set, VkDescriptorType type, uint32_t first, uint32_t n,
	const VkBuffer *bufs, const uint64_t *offsets, const uint64_t *ranges);
void bitgpu_cmd_barrier(VkCommandBuffer cb, uint32_t srcStage, uint32_t srcAccess, uint32_t dstStage, uint32_t dstAccess);
void bitgpu_cmd_bind(VkCommandBuffer cb, VkPipeline p, VkPipelineLayout layout, VkDescriptorSet s0, VkDescriptorSet s1);
void bitgpu_cmd_copy(VkCommandBuffer cb, VkBuffer src, VkBuffer dst, uint64_t srcOff, uint64_t dstOff, uint64_t size);
// bitgpu_submit_wait submits cb to q signalling fence, waits for it and resets it.
VkResult bitgpu_submit_wait(VkDevice d, VkQueue q, VkCommandBuffer cb, VkFence fence);
