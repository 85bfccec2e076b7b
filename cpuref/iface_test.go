package cpuref_test

import (
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/runtime"
)

// cpuref.Backend is a runtime.Backend without cpuref importing runtime.
var _ runtime.Backend = (*cpuref.Backend)(nil)
