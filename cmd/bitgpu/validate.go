package main

import (
	"fmt"
	"io"
	"sync"
)

// validationSource is what reportValidation reads: a gpu.Device (whose log outlives Close, so
// messages the layer reports while the device is destroyed — leaks — are included).
type validationSource interface {
	ValidationMessages() []string
}

// watched lists every Vulkan device this process opened; run reports their validation messages
// after the command returns.
var watched struct {
	sync.Mutex
	devs []validationSource
}

// watchValidation adds d to the devices run reports on.
func watchValidation(d validationSource) {
	watched.Lock()
	watched.devs = append(watched.devs, d)
	watched.Unlock()
}

// reportValidation prints every message the Vulkan validation layer delivered on the watched
// devices (BITGPU_VALIDATE=1 turns the layer on), one escaped line each prefixed
// "bitgpu: validation: ", and returns an error counting them; nil when there were none (always the
// case with validation off).
func reportValidation(w io.Writer) error {
	watched.Lock()
	defer watched.Unlock()
	n := 0
	for _, d := range watched.devs {
		for _, m := range d.ValidationMessages() {
			fmt.Fprintf(w, "bitgpu: validation: %s\n", printable(m))
			n++
		}
	}
	if n > 0 {
		return fmt.Errorf("the Vulkan validation layer reported %d message(s) (BITGPU_VALIDATE=1)", n)
	}
	return nil
}
