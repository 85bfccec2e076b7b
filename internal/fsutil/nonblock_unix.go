//go:build unix

package fsutil

import "syscall"

// openNonblock makes opening a FIFO for reading return at once instead of waiting for a writer, so
// OpenRegular can look at what it opened before anything blocks.
const openNonblock = syscall.O_NONBLOCK
