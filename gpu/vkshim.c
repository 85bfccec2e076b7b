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
	const char *exts[] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME, VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME};
	VkDebugUtilsMessengerCreateInfoEXT mci;
	// Synchronization validation on top of the default checks: a missing or too weak barrier
	// between dependent dispatches (or copies, or host access) is reported as a SYNC-HAZARD-*
	// message, so the GPU tests fail on it on every driver, even one that happens to run the
	// dispatches in order (lavapipe, SwiftShader). The layer provides VK_EXT_validation_features.
	VkValidationFeatureEnableEXT enables[] = {VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
	VkValidationFeaturesEXT vf = {VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
	vf.enabledValidationFeatureCount = 1;
	vf.pEnabledValidationFeatures = enables;
	if (validate) {
		fill_messenger_info(&mci, userData);
		mci.pNext = &vf;
		ci.pNext = &mci;
		ci.enabledLayerCount = 1;
		ci.ppEnabledLayerNames = layers;
		ci.enabledExtensionCount = 2;
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

	PFN_vkGetPhysicalDeviceQueueFamilyProperties qfp =
		(PFN_vkGetPhysicalDeviceQueueFamilyProperties)gipa(inst, "vkGetPhysicalDeviceQueueFamilyProperties");
	uint32_t nq = 0;
	qfp(pd, &nq, NULL);
	VkQueueFamilyProperties *qf = calloc(nq ? nq : 1, sizeof(*qf));
	out->computeFamily = ~0u;
	if (qf) {
		qfp(pd, &nq, qf);
		for (uint32_t i = 0; i < nq; i++) {
			if (!(qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT)) continue;
			if (out->computeFamily == ~0u || (out->timestampBits == 0 && qf[i].timestampValidBits > 0)) {
				out->computeFamily = i;
				out->timestampBits = qf[i].timestampValidBits;
			}
		}
		free(qf);
	}

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

static PFN_vkCreateDescriptorSetLayout p_CreateDescriptorSetLayout;
static PFN_vkCreatePipelineLayout p_CreatePipelineLayout;
static PFN_vkCreateShaderModule p_CreateShaderModule;
static PFN_vkDestroyShaderModule p_DestroyShaderModule;
static PFN_vkCreateComputePipelines p_CreateComputePipelines;
static PFN_vkCreateDescriptorPool p_CreateDescriptorPool;
static PFN_vkAllocateDescriptorSets p_AllocateDescriptorSets;
static PFN_vkUpdateDescriptorSets p_UpdateDescriptorSets;
static PFN_vkCmdPipelineBarrier p_CmdPipelineBarrier;
static PFN_vkCmdBindPipeline p_CmdBindPipeline;
static PFN_vkCmdBindDescriptorSets p_CmdBindDescriptorSets;
static PFN_vkCmdCopyBuffer p_CmdCopyBuffer;
static PFN_vkQueueSubmit p_QueueSubmit;
static PFN_vkWaitForFences p_WaitForFences;
static PFN_vkResetFences p_ResetFences;

void bitgpu_load_device_fns(VkInstance inst) {
	// The loader's trampolines dispatch on the device (or command buffer) argument, so the
	// pointers are the same for every instance and device.
#define LOAD(name) p_##name = (PFN_vk##name)gipa(inst, "vk" #name)
	LOAD(CreateDescriptorSetLayout);
	LOAD(CreatePipelineLayout);
	LOAD(CreateShaderModule);
	LOAD(DestroyShaderModule);
	LOAD(CreateComputePipelines);
	LOAD(CreateDescriptorPool);
	LOAD(AllocateDescriptorSets);
	LOAD(UpdateDescriptorSets);
	LOAD(CmdPipelineBarrier);
	LOAD(CmdBindPipeline);
	LOAD(CmdBindDescriptorSets);
	LOAD(CmdCopyBuffer);
	LOAD(QueueSubmit);
	LOAD(WaitForFences);
	LOAD(ResetFences);
#undef LOAD
}

VkResult bitgpu_create_set_layout(VkDevice d, uint32_t n, VkDescriptorType type, VkDescriptorSetLayout *out) {
	VkDescriptorSetLayoutBinding b[32];
	if (n > 32) return VK_ERROR_TOO_MANY_OBJECTS;
	for (uint32_t i = 0; i < n; i++) {
		memset(&b[i], 0, sizeof(b[i]));
		b[i].binding = i;
		b[i].descriptorType = type;
		b[i].descriptorCount = 1;
		b[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
	}
	VkDescriptorSetLayoutCreateInfo ci = {VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
	ci.bindingCount = n;
	ci.pBindings = n ? b : NULL;
	return p_CreateDescriptorSetLayout(d, &ci, NULL, out);
}

VkResult bitgpu_create_pipeline_layout(VkDevice d, VkDescriptorSetLayout set0, VkDescriptorSetLayout set1,
	uint32_t pushSize, VkPipelineLayout *out) {
	VkDescriptorSetLayout sets[2] = {set0, set1};
	VkPushConstantRange range = {VK_SHADER_STAGE_COMPUTE_BIT, 0, pushSize};
	VkPipelineLayoutCreateInfo ci = {VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
	ci.setLayoutCount = 2;
	ci.pSetLayouts = sets;
	if (pushSize) {
		ci.pushConstantRangeCount = 1;
		ci.pPushConstantRanges = &range;
	}
	return p_CreatePipelineLayout(d, &ci, NULL, out);
}

VkResult bitgpu_create_compute_pipeline(VkDevice d, VkPipelineCache cache, const uint32_t *code, size_t codeSize,
	const uint32_t *spec, uint32_t nspec, VkPipelineLayout layout, VkPipeline *out) {
	VkShaderModuleCreateInfo mci = {VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
	mci.codeSize = codeSize;
	mci.pCode = code;
	VkShaderModule module;
	VkResult r = p_CreateShaderModule(d, &mci, NULL, &module);
	if (r != VK_SUCCESS) return r;
	VkSpecializationMapEntry entries[32];
	if (nspec > 32) nspec = 32;
	for (uint32_t i = 0; i < nspec; i++) {
		entries[i].constantID = i;
		entries[i].offset = 4 * i;
		entries[i].size = 4;
	}
	VkSpecializationInfo si = {nspec, entries, 4 * (size_t)nspec, spec};
	VkComputePipelineCreateInfo ci = {VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
	ci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
	ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
	ci.stage.module = module;
	ci.stage.pName = "main";
	ci.stage.pSpecializationInfo = nspec ? &si : NULL;
	ci.layout = layout;
	r = p_CreateComputePipelines(d, cache, 1, &ci, NULL, out);
	p_DestroyShaderModule(d, module, NULL);
	return r;
}

VkResult bitgpu_create_descriptor_pool(VkDevice d, uint32_t maxSets, uint32_t storage, uint32_t uniform,
	VkDescriptorPool *out) {
	VkDescriptorPoolSize sizes[2] = {{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, storage}, {VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER, uniform}};
	VkDescriptorPoolCreateInfo ci = {VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
	ci.maxSets = maxSets;
	ci.poolSizeCount = 2;
	ci.pPoolSizes = sizes;
	return p_CreateDescriptorPool(d, &ci, NULL, out);
}

VkResult bitgpu_allocate_set(VkDevice d, VkDescriptorPool pool, VkDescriptorSetLayout layout, VkDescriptorSet *out) {
	VkDescriptorSetAllocateInfo ai = {VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
	ai.descriptorPool = pool;
	ai.descriptorSetCount = 1;
	ai.pSetLayouts = &layout;
	return p_AllocateDescriptorSets(d, &ai, out);
}

void bitgpu_write_buffers(VkDevice d, VkDescriptorSet set, VkDescriptorType type, uint32_t first, uint32_t n,
	const VkBuffer *bufs, const uint64_t *offsets, const uint64_t *ranges) {
	VkDescriptorBufferInfo info[32];
	VkWriteDescriptorSet w[32];
	if (n > 32) n = 32;
	for (uint32_t i = 0; i < n; i++) {
		info[i].buffer = bufs[i];
		info[i].offset = offsets[i];
		info[i].range = ranges[i];
		memset(&w[i], 0, sizeof(w[i]));
		w[i].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
		w[i].dstSet = set;
		w[i].dstBinding = first + i;
		w[i].descriptorCount = 1;
		w[i].descriptorType = type;
		w[i].pBufferInfo = &info[i];
	}
	p_UpdateDescriptorSets(d, n, w, 0, NULL);
}

void bitgpu_cmd_barrier(VkCommandBuffer cb, uint32_t srcStage, uint32_t srcAccess, uint32_t dstStage, uint32_t dstAccess) {
	VkMemoryBarrier mb = {VK_STRUCTURE_TYPE_MEMORY_BARRIER};
	mb.srcAccessMask = srcAccess;
	mb.dstAccessMask = dstAccess;
	p_CmdPipelineBarrier(cb, srcStage, dstStage, 0, 1, &mb, 0, NULL, 0, NULL);
}

void bitgpu_cmd_bind(VkCommandBuffer cb, VkPipeline p, VkPipelineLayout layout, VkDescriptorSet s0, VkDescriptorSet s1) {
	VkDescriptorSet sets[2] = {s0, s1};
	p_CmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, p);
	p_CmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 2, sets, 0, NULL);
}

void bitgpu_cmd_copy(VkCommandBuffer cb, VkBuffer src, VkBuffer dst, uint64_t srcOff, uint64_t dstOff, uint64_t size) {
	VkBufferCopy c = {srcOff, dstOff, size};
	p_CmdCopyBuffer(cb, src, dst, 1, &c);
}

VkResult bitgpu_submit_wait(VkDevice d, VkQueue q, VkCommandBuffer cb, VkFence fence) {
	VkSubmitInfo si = {VK_STRUCTURE_TYPE_SUBMIT_INFO};
	si.commandBufferCount = 1;
	si.pCommandBuffers = &cb;
	VkResult r = p_QueueSubmit(q, 1, &si, fence);
	if (r != VK_SUCCESS) return r;
	r = p_WaitForFences(d, 1, &fence, VK_TRUE, UINT64_MAX);
	if (r != VK_SUCCESS) return r;
	return p_ResetFences(d, 1, &fence);
}
