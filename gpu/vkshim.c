#include "vkshim.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

static PFN_vkGetInstanceProcAddr gipa;
static uint32_t instance_version = VK_API_VERSION_1_1; // apiVersion of the last instance created

// effective_minor is the minor API version a device runs at: min(instance, device).
static uint32_t effective_minor(uint32_t deviceVersion) {
	uint32_t v = deviceVersion < instance_version ? deviceVersion : instance_version;
	return VK_API_VERSION_MINOR(v);
}

PFN_vkGetInstanceProcAddr bitgpu_load(void) {
	if (gipa) return gipa;
	void *lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!lib) lib = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
	if (!lib) return NULL;
	gipa = (PFN_vkGetInstanceProcAddr)dlsym(lib, "vkGetInstanceProcAddr");
	return gipa;
}

// Implemented in Go (debug.go).
extern void bitgpuDebugMessage(uintptr_t userData, uint32_t severity, uint32_t types, char *msg);

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_cb(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
	VkDebugUtilsMessageTypeFlagsEXT types, const VkDebugUtilsMessengerCallbackDataEXT *data, void *user) {
	bitgpuDebugMessage((uintptr_t)user, (uint32_t)sev, (uint32_t)types,
		(char *)(data && data->pMessage ? data->pMessage : ""));
	return VK_FALSE;
}

static void fill_messenger_info(VkDebugUtilsMessengerCreateInfoEXT *ci, uintptr_t userData) {
	memset(ci, 0, sizeof(*ci));
	ci->sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT;
	ci->messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
		VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
	ci->messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
		VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
	ci->pfnUserCallback = debug_cb;
	ci->pUserData = (void *)userData;
}

VkResult bitgpu_create_instance(int validate, uintptr_t userData, VkInstance *out) {
	if (!bitgpu_load()) return VK_ERROR_INITIALIZATION_FAILED;
	PFN_vkCreateInstance create = (PFN_vkCreateInstance)gipa(NULL, "vkCreateInstance");
	if (!create) return VK_ERROR_INITIALIZATION_FAILED;
	VkApplicationInfo app = {VK_STRUCTURE_TYPE_APPLICATION_INFO};
	app.pApplicationName = "bitgpu";
	app.pEngineName = "bitgpu";
	// Ask for the newest API the loader offers, up to 1.3, so features promoted to core (integer
	// dot product, subgroup size control) are usable without their extensions on 1.3 devices.
	// The effective version of a device is the smaller of this and its own, which is what
	// bitgpu_query_caps and bitgpu_create_device compare against.
	uint32_t version = VK_API_VERSION_1_1;
	PFN_vkEnumerateInstanceVersion ver = (PFN_vkEnumerateInstanceVersion)gipa(NULL, "vkEnumerateInstanceVersion");
	if (ver && ver(&version) != VK_SUCCESS) version = VK_API_VERSION_1_1;
	if (version > VK_API_VERSION_1_3) version = VK_API_VERSION_1_3;
	app.apiVersion = version;
	instance_version = version;
	VkInstanceCreateInfo ci = {VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
	ci.pApplicationInfo = &app;
	const char *layers[] = {"VK_LAYER_KHRONOS_validation"};
	const char *exts[] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME};
	VkDebugUtilsMessengerCreateInfoEXT mci;
	if (validate) {
		fill_messenger_info(&mci, userData);
		ci.pNext = &mci;
		ci.enabledLayerCount = 1;
		ci.ppEnabledLayerNames = layers;
		ci.enabledExtensionCount = 1;
		ci.ppEnabledExtensionNames = exts;
	}
	return create(&ci, NULL, out);
}

VkResult bitgpu_create_messenger(VkInstance inst, uintptr_t userData, VkDebugUtilsMessengerEXT *out) {
	PFN_vkCreateDebugUtilsMessengerEXT create =
		(PFN_vkCreateDebugUtilsMessengerEXT)gipa(inst, "vkCreateDebugUtilsMessengerEXT");
	if (!create) return VK_ERROR_EXTENSION_NOT_PRESENT;
	VkDebugUtilsMessengerCreateInfoEXT mci;
	fill_messenger_info(&mci, userData);
	return create(inst, &mci, NULL, out);
}

void bitgpu_destroy_messenger(VkInstance inst, VkDebugUtilsMessengerEXT m) {
	PFN_vkDestroyDebugUtilsMessengerEXT destroy =
		(PFN_vkDestroyDebugUtilsMessengerEXT)gipa(inst, "vkDestroyDebugUtilsMessengerEXT");
	if (destroy && m) destroy(inst, m, NULL);
}

void bitgpu_destroy_instance(VkInstance inst) {
	PFN_vkDestroyInstance destroy = (PFN_vkDestroyInstance)gipa(inst, "vkDestroyInstance");
	if (destroy) destroy(inst, NULL);
}

static int has_ext(VkExtensionProperties *exts, uint32_t n, const char *name) {
	for (uint32_t i = 0; i < n; i++)
		if (strcmp(exts[i].extensionName, name) == 0) return 1;
	return 0;
}

// Feature and property structures chained by both the query and device creation.
typedef struct {
	VkPhysicalDevice16BitStorageFeatures s16;
	VkPhysicalDevice8BitStorageFeatures s8;
	VkPhysicalDeviceShaderFloat16Int8Features f16i8;
	VkPhysicalDeviceShaderIntegerDotProductFeatures dot;
	VkPhysicalDeviceSubgroupSizeControlFeatures ssc;
} feature_chain;

// chain_features links the structures whose extension (or core version) the device has; caps says which.
static void *chain_features(feature_chain *fc, const bitgpu_caps *caps) {
	memset(fc, 0, sizeof(*fc));
	void *head = NULL;
	fc->s16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES;
	fc->s8.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES;
	fc->f16i8.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES;
	fc->dot.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES;
	fc->ssc.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES;
	if (caps->ext16BitStorage) { fc->s16.pNext = head; head = &fc->s16; }
	if (caps->ext8BitStorage) { fc->s8.pNext = head; head = &fc->s8; }
	if (caps->extFloat16Int8) { fc->f16i8.pNext = head; head = &fc->f16i8; }
	if (caps->extIntegerDotProduct) { fc->dot.pNext = head; head = &fc->dot; }
	if (caps->extSubgroupSizeControl) { fc->ssc.pNext = head; head = &fc->ssc; }
	return head;
}

void bitgpu_query_caps(VkInstance inst, VkPhysicalDevice pd, bitgpu_caps *out) {
	memset(out, 0, sizeof(*out));
	PFN_vkGetPhysicalDeviceProperties props1 =
		(PFN_vkGetPhysicalDeviceProperties)gipa(inst, "vkGetPhysicalDeviceProperties");
	PFN_vkGetPhysicalDeviceProperties2 props2 =
		(PFN_vkGetPhysicalDeviceProperties2)gipa(inst, "vkGetPhysicalDeviceProperties2");
	PFN_vkGetPhysicalDeviceFeatures2 feats2 =
		(PFN_vkGetPhysicalDeviceFeatures2)gipa(inst, "vkGetPhysicalDeviceFeatures2");
	PFN_vkEnumerateDeviceExtensionProperties enumExt =
		(PFN_vkEnumerateDeviceExtensionProperties)gipa(inst, "vkEnumerateDeviceExtensionProperties");

	VkPhysicalDeviceProperties p;
	props1(pd, &p);
	out->apiVersion = p.apiVersion;
	out->driverVersion = p.driverVersion;
	out->vendorID = p.vendorID;
	out->deviceID = p.deviceID;
	out->deviceType = p.deviceType;
	memcpy(out->deviceName, p.deviceName, sizeof(out->deviceName));

	uint32_t n = 0;
	enumExt(pd, NULL, &n, NULL);
	VkExtensionProperties *exts = calloc(n ? n : 1, sizeof(*exts));
	if (exts) enumExt(pd, NULL, &n, exts); else n = 0;
	uint32_t minor = effective_minor(p.apiVersion);
	out->ext16BitStorage = 1; // core in Vulkan 1.1
	out->ext8BitStorage = minor >= 2 || has_ext(exts, n, VK_KHR_8BIT_STORAGE_EXTENSION_NAME);
	out->extFloat16Int8 = minor >= 2 || has_ext(exts, n, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
	out->extIntegerDotProduct = minor >= 3 || has_ext(exts, n, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
	out->extSubgroupSizeControl = minor >= 3 || has_ext(exts, n, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
	int driverProps = minor >= 2 || has_ext(exts, n, VK_KHR_DRIVER_PROPERTIES_EXTENSION_NAME);
	free(exts);

	VkPhysicalDeviceSubgroupProperties sg = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
	VkPhysicalDeviceSubgroupSizeControlProperties ssc = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
	VkPhysicalDeviceDriverProperties drv = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
	VkPhysicalDeviceShaderIntegerDotProductProperties dotp = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES};
	VkPhysicalDeviceProperties2 p2 = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
	p2.pNext = &sg;
	void **tail = &sg.pNext;
	if (out->extSubgroupSizeControl) { *tail = &ssc; tail = &ssc.pNext; }
	if (driverProps) { *tail = &drv; tail = &drv.pNext; }
	if (out->extIntegerDotProduct) { *tail = &dotp; tail = &dotp.pNext; }
	if (props2) props2(pd, &p2);
	out->subgroupSize = sg.subgroupSize;
	out->subgroupStages = sg.supportedStages;
	out->subgroupOps = sg.supportedOperations;
	out->minSubgroupSize = ssc.minSubgroupSize;
	out->maxSubgroupSize = ssc.maxSubgroupSize;
	out->requiredSubgroupSizeStages = ssc.requiredSubgroupSizeStages;
	if (driverProps) {
		out->driverID = drv.driverID;
		memcpy(out->driverName, drv.driverName, sizeof(out->driverName));
		memcpy(out->driverInfo, drv.driverInfo, sizeof(out->driverInfo));
	}
	out->dot4x8PackedSignedAccelerated = dotp.integerDotProduct4x8BitPackedSignedAccelerated;
	out->dot4x8PackedMixedAccelerated = dotp.integerDotProduct4x8BitPackedMixedSignednessAccelerated;

	feature_chain fc;
	VkPhysicalDeviceFeatures2 f2 = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
	f2.pNext = chain_features(&fc, out);
	if (feats2) feats2(pd, &f2);
	out->shaderInt16 = f2.features.shaderInt16;
	out->shaderInt64 = f2.features.shaderInt64;
	out->storageBuffer16BitAccess = fc.s16.storageBuffer16BitAccess;
	out->storageBuffer8BitAccess = fc.s8.storageBuffer8BitAccess;
	out->shaderInt8 = fc.f16i8.shaderInt8;
	out->shaderFloat16 = fc.f16i8.shaderFloat16;
	out->integerDotProduct = fc.dot.shaderIntegerDotProduct;
	out->subgroupSizeControl = fc.ssc.subgroupSizeControl;
	out->computeFullSubgroups = fc.ssc.computeFullSubgroups;
}

VkResult bitgpu_create_device(VkInstance inst, VkPhysicalDevice pd, uint32_t queueFamily,
	const bitgpu_caps *enable, VkDevice *out) {
	PFN_vkCreateDevice create = (PFN_vkCreateDevice)gipa(inst, "vkCreateDevice");
	PFN_vkGetPhysicalDeviceProperties props1 =
		(PFN_vkGetPhysicalDeviceProperties)gipa(inst, "vkGetPhysicalDeviceProperties");
	VkPhysicalDeviceProperties p;
	props1(pd, &p);
	uint32_t minor = effective_minor(p.apiVersion);

	// Only chain structures whose extension is enabled (or core): caps' ext* say which.
	bitgpu_caps chained = *enable;
	chained.ext8BitStorage = enable->ext8BitStorage && enable->storageBuffer8BitAccess;
	chained.extFloat16Int8 = enable->extFloat16Int8 && (enable->shaderInt8 || enable->shaderFloat16);
	chained.extIntegerDotProduct = enable->extIntegerDotProduct && enable->integerDotProduct;
	chained.extSubgroupSizeControl = enable->extSubgroupSizeControl && enable->subgroupSizeControl;
	chained.ext16BitStorage = enable->storageBuffer16BitAccess;
	feature_chain fc;
	VkPhysicalDeviceFeatures2 f2 = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
	f2.pNext = chain_features(&fc, &chained);
	f2.features.shaderInt16 = enable->shaderInt16;
	f2.features.shaderInt64 = enable->shaderInt64;
	fc.s16.storageBuffer16BitAccess = enable->storageBuffer16BitAccess;
	fc.s8.storageBuffer8BitAccess = enable->storageBuffer8BitAccess;
	fc.f16i8.shaderInt8 = enable->shaderInt8;
	fc.f16i8.shaderFloat16 = enable->shaderFloat16;
	fc.dot.shaderIntegerDotProduct = enable->integerDotProduct;
	fc.ssc.subgroupSizeControl = enable->subgroupSizeControl;
	fc.ssc.computeFullSubgroups = enable->computeFullSubgroups;

	const char *exts[8];
	uint32_t next = 0;
	if (minor < 2 && chained.ext8BitStorage) exts[next++] = VK_KHR_8BIT_STORAGE_EXTENSION_NAME;
	if (minor < 2 && chained.extFloat16Int8) exts[next++] = VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME;
	if (minor < 3 && chained.extIntegerDotProduct) exts[next++] = VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME;
	if (minor < 3 && chained.extSubgroupSizeControl) exts[next++] = VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;

	float prio = 1.0f;
	VkDeviceQueueCreateInfo qci = {VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
	qci.queueFamilyIndex = queueFamily;
	qci.queueCount = 1;
	qci.pQueuePriorities = &prio;
	VkDeviceCreateInfo dci = {VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
	dci.pNext = &f2;
	dci.queueCreateInfoCount = 1;
	dci.pQueueCreateInfos = &qci;
	dci.enabledExtensionCount = next;
	dci.ppEnabledExtensionNames = exts;
	return create(pd, &dci, NULL, out);
}
