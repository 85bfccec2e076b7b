//go:build cgo

package gpu

/*
#include <stdint.h>
*/
import "C"

import (
	"fmt"
	"sync"
)

// validationLog collects the warnings and errors the Khronos validation layer reports for one
// Device (or one Enumerate call). Messages arrive on driver threads; the log is safe for that.
type validationLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *validationLog) add(s string) {
	l.mu.Lock()
	l.msgs = append(l.msgs, s)
	l.mu.Unlock()
}

func (l *validationLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// logs maps the userData integer handed to the C messenger to its log; Go pointers may not be kept
// by C, so the C side holds only this key.
var (
	logsMu  sync.Mutex
	logs    = map[uintptr]*validationLog{}
	logNext uintptr
)

func registerLog(l *validationLog) uintptr {
	logsMu.Lock()
	defer logsMu.Unlock()
	logNext++
	logs[logNext] = l
	return logNext
}

func unregisterLog(key uintptr) {
	logsMu.Lock()
	delete(logs, key)
	logsMu.Unlock()
}

// Severity bits of VkDebugUtilsMessageSeverityFlagBitsEXT.
const (
	severityWarning = 0x100
	severityError   = 0x1000
)

//export bitgpuDebugMessage
func bitgpuDebugMessage(userData C.uintptr_t, severity, types C.uint32_t, msg *C.char) {
	logsMu.Lock()
	l := logs[uintptr(userData)]
	logsMu.Unlock()
	if l == nil {
		return
	}
	level := "warning"
	if severity&severityError != 0 {
		level = "error"
	}
	l.add(fmt.Sprintf("validation %s: %s", level, C.GoString(msg)))
}
