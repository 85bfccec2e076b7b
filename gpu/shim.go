//go:build cgo

package gpu

/*
#cgo LDFLAGS: -ldl
#include "vkshim.h"
*/
import "C"

import (
	"sync"
	"unsafe"

	vk "github.com/goki/vulkan"
)

// loadOnce initialises the goki/vulkan binding once per process. The binding is loaded with
// SetDefaultGetInstanceProcAddr (it opens libvulkan.so); where only the versioned libvulkan.so.1 is
// installed (no -dev package) the shim's own dlopen of libvulkan.so.1 supplies vkGetInstanceProcAddr.
var (
	loadOnce sync.Once
	loadErr  error
)

func loadVulkan() error {
	loadOnce.Do(func() {
		if err := vk.SetDefaultGetInstanceProcAddr(); err != nil {
			p := C.bitgpu_load()
			if p == nil {
				loadErr = errNoLoader
				return
			}
			vk.SetGetInstanceProcAddr(unsafe.Pointer(p))
		} else if C.bitgpu_load() == nil {
			loadErr = errNoLoader
			return
		}
		if err := vk.Init(); err != nil {
			loadErr = err
		}
	})
	return loadErr
}

// vkResult converts a C VkResult to the binding's Result.
func vkResult(r C.VkResult) vk.Result { return vk.Result(r) }

// ptr returns a Vulkan handle of the binding as the raw pointer the C shim takes (handles are
// pointers on 64-bit platforms, dispatchable or not).
func ptr[H any](h H) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&h)) }

// handle converts a raw pointer back to a binding handle type.
func handle[H any](p unsafe.Pointer) H { return *(*H)(unsafe.Pointer(&p)) }
