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

	// Device extensions present (1) or not (0); core features count as present.
	uint32_t ext16BitStorage, ext8BitStorage, extFloat16Int8, extIntegerDotProduct, extSubgroupSizeControl;
} bitgpu_caps;

// bitgpu_load opens the Vulkan loader (libvulkan.so.1) and returns vkGetInstanceProcAddr, or NULL.
PFN_vkGetInstanceProcAddr bitgpu_load(void);

// bitgpu_create_instance creates a Vulkan 1.1 instance. With validate != 0 it enables
// VK_LAYER_KHRONOS_validation and VK_EXT_debug_utils and chains a messenger create info so messages
// during instance creation and destruction reach the callback too (userData is passed through).
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
