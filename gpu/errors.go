//go:build cgo

package gpu

import (
	"fmt"

	vk "github.com/goki/vulkan"
)

var errNoLoader = fmt.Errorf("%w: the Vulkan loader libvulkan.so.1 was not found (install libvulkan1 and a driver such as mesa-vulkan-drivers)", ErrNoDevice)

// check turns a failed VkResult from call into an error naming the call.
func check(r vk.Result, call string) error {
	if r == vk.Success {
		return nil
	}
	return fmt.Errorf("%s: %s (VkResult %d)", call, resultName(r), int32(r))
}

// resultName spells the VkResult codes bitgpu can meet.
func resultName(r vk.Result) string {
	switch r {
	case vk.ErrorOutOfHostMemory:
		return "VK_ERROR_OUT_OF_HOST_MEMORY"
	case vk.ErrorOutOfDeviceMemory:
		return "VK_ERROR_OUT_OF_DEVICE_MEMORY"
	case vk.ErrorInitializationFailed:
		return "VK_ERROR_INITIALIZATION_FAILED"
	case vk.ErrorDeviceLost:
		return "VK_ERROR_DEVICE_LOST"
	case vk.ErrorMemoryMapFailed:
		return "VK_ERROR_MEMORY_MAP_FAILED"
	case vk.ErrorLayerNotPresent:
		return "VK_ERROR_LAYER_NOT_PRESENT"
	case vk.ErrorExtensionNotPresent:
		return "VK_ERROR_EXTENSION_NOT_PRESENT"
	case vk.ErrorFeatureNotPresent:
		return "VK_ERROR_FEATURE_NOT_PRESENT"
	case vk.ErrorIncompatibleDriver:
		return "VK_ERROR_INCOMPATIBLE_DRIVER"
	case vk.ErrorTooManyObjects:
		return "VK_ERROR_TOO_MANY_OBJECTS"
	case vk.ErrorFragmentedPool:
		return "VK_ERROR_FRAGMENTED_POOL"
	case vk.ErrorOutOfPoolMemory:
		return "VK_ERROR_OUT_OF_POOL_MEMORY"
	case vk.Timeout:
		return "VK_TIMEOUT"
	case vk.NotReady:
		return "VK_NOT_READY"
	}
	return "VkResult error"
}
