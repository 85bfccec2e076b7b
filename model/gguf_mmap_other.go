//go:build !unix

package model

import (
	"io"
	"os"
)

// mmapFile reads the first size bytes of f into memory on systems without mmap.
func mmapFile(f *os.File, size int) ([]byte, func() error, error) {
	data := make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, nil, err
	}
	return data, func() error { return nil }, nil
}
