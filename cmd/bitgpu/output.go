package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bitgpu/bitgpu/internal/fsutil"
)

// pathErrCause strips the operation and path of an *fs.PathError, so a message that names the
// path itself does not name it twice.
func pathErrCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// checkOutputFile checks, before a command does its work, the file named by flag that it will
// write through fsutil.WriteAtomic: the name is not empty, its directory exists (bitgpu creates
// no directories) and the file is absent or a regular file — a device, FIFO, socket or directory
// is refused, never replaced. Errors start with the flag and name the path.
func checkOutputFile(flag, path string) error {
	if path == "" {
		return fmt.Errorf("%s: empty file name", flag)
	}
	if err := fsutil.CheckWriteTarget(path); err != nil {
		if errors.Is(err, fsutil.ErrNotRegular) {
			return fmt.Errorf("%s %w", flag, err)
		}
		return fmt.Errorf("%s %s: %w", flag, path, pathErrCause(err))
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("%s %s: directory %s does not exist", flag, path, dir)
	}
	return nil
}

// checkOutputDir checks, before a command does its work, the directory named by flag that it
// will write files into: it must exist (bitgpu creates no directories; `make bench` creates its
// own). Errors start with the flag and name the directory.
func checkOutputDir(flag, dir string) error {
	if dir == "" {
		return fmt.Errorf("%s: empty directory name", flag)
	}
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s %s: no such directory", flag, dir)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, dir, pathErrCause(err))
	}
	if !st.IsDir() {
		return fmt.Errorf("%s %s: not a directory", flag, dir)
	}
	return nil
}

// writeOutput writes the file named by flag through fsutil.WriteAtomic (a temporary file renamed
// into place, removed on error or interrupt; a non-regular target refused). Errors start with
// the flag and name the path.
func writeOutput(flag, path string, fill func(w io.Writer) error) error {
	err := fsutil.WriteAtomic(path, fill)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fsutil.ErrNotRegular) || errors.Is(err, fsutil.ErrInterrupted):
		return fmt.Errorf("%s %w", flag, err)
	}
	return fmt.Errorf("%s %s: %w", flag, path, pathErrCause(err))
}
