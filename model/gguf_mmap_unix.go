//go:build unix

package model

import (
	"os"

	"golang.org/x/sys/unix"
)

// mmapFile maps the first size bytes of f read-only and shared; the pages are read lazily.
func mmapFile(f *os.File, size int) ([]byte, func() error, error) {
	data, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return data, func() error { return unix.Munmap(data) }, nil
}
