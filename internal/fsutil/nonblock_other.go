//go:build !unix

package fsutil

// openNonblock is 0 where O_NONBLOCK does not exist; OpenRegular stats the path before opening it.
const openNonblock = 0
