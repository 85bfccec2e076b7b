package model

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"unsafe"
)

// ErrFileChanged is wrapped by the error CatchFault returns when a memory fault hit a
// memory-mapped model file: the file was truncated or rewritten in place (for example
// `cp new.gguf model.gguf` over a file in use), so pages bitgpu had mapped no longer exist.
var ErrFileChanged = errors.New("model file changed while in use (truncated or overwritten in place); reopen it")

// mapping is one live memory-mapped file: its first byte's address, its length and its path.
type mapping struct {
	addr, size uintptr
	path       string
}

// mappings holds every live mapping made by mapFile, so a fault address can be traced to a file.
var mappings struct {
	sync.Mutex
	live []mapping
}

// trackMapping records data as a mapping of path and returns the function that forgets it.
func trackMapping(path string, data []byte) (forget func()) {
	if len(data) == 0 {
		return func() {}
	}
	m := mapping{addr: uintptr(unsafe.Pointer(unsafe.SliceData(data))), size: uintptr(len(data)), path: path}
	mappings.Lock()
	mappings.live = append(mappings.live, m)
	mappings.Unlock()
	return func() {
		mappings.Lock()
		defer mappings.Unlock()
		for i, l := range mappings.live {
			if l == m {
				mappings.live = append(mappings.live[:i], mappings.live[i+1:]...)
				return
			}
		}
	}
}

// mappedPath returns the path of the live mapping holding addr, or "" if none does.
func mappedPath(addr uintptr) string {
	mappings.Lock()
	defer mappings.Unlock()
	for _, l := range mappings.live {
		if addr >= l.addr && addr-l.addr < l.size {
			return l.path
		}
	}
	return ""
}

// CatchFault runs fn on the calling goroutine with panic-on-fault set (runtime/debug.SetPanicOnFault)
// and turns a memory fault (SIGBUS or SIGSEGV at a non-nil address) into an error wrapping
// ErrFileChanged, naming the mapped file the address lies in when it is one of the model files
// this package mapped. Any other panic propagates unchanged. The goroutine's previous
// panic-on-fault setting is restored. Deferred functions between the fault and CatchFault run as
// for any panic, so callers must treat state touched by fn as unusable after such an error (the
// backend that returned it is closed by its owner, not reused).
//
// Faults on mapped memory are per goroutine: every goroutine that reads a memory-mapped tensor
// (cpuref's row workers, the safetensors converters) calls CatchFault itself.
func CatchFault(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		r := recover()
		if r == nil {
			return
		}
		fault, ok := r.(interface{ Addr() uintptr })
		if !ok {
			panic(r)
		}
		if p := mappedPath(fault.Addr()); p != "" {
			err = fmt.Errorf("%s: %w", p, ErrFileChanged)
		} else {
			err = fmt.Errorf("memory fault at address %#x: %w", fault.Addr(), ErrFileChanged)
		}
	}()
	return fn()
}
