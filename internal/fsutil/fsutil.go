// Package fsutil holds the file-system rules every bitgpu reader and writer follows: model and
// cache files are read only when they are regular files (a FIFO or device would block or never
// end), outputs are written through a temporary file renamed over the target only when that target
// is absent or a regular file, and the temporary files in progress are registered so that a
// signal handler can remove them before the process exits.
package fsutil

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// ErrNotRegular is wrapped by the errors of CheckWriteTarget, OpenRegular, ReadRegular and
// WriteAtomic for a path that exists but is not a regular file (a directory, FIFO, socket or
// device).
var ErrNotRegular = errors.New("not a regular file")

// ErrInterrupted is wrapped by the errors of RegisterTemp and WriteAtomic once RemoveTemps has
// run: the process is exiting on a signal and writes no more files.
var ErrInterrupted = errors.New("interrupted")

// notRegular returns the error for path, whose mode m is not a regular file's.
func notRegular(path string, m fs.FileMode) error {
	kind := "its mode is " + m.Type().String()
	switch {
	case m.IsDir():
		kind = "it is a directory"
	case m&fs.ModeNamedPipe != 0:
		kind = "it is a named pipe"
	case m&fs.ModeSocket != 0:
		kind = "it is a socket"
	case m&fs.ModeCharDevice != 0:
		kind = "it is a character device"
	case m&fs.ModeDevice != 0:
		kind = "it is a block device"
	}
	return fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, kind)
}

// CheckWriteTarget returns nil when path does not exist or is a regular file (symbolic links
// followed), and otherwise an error naming path that wraps ErrNotRegular. Writers that rename a
// temporary file over their target call it first, so that a device, FIFO, socket or directory is
// never replaced: without it, `-o /dev/null` run as root turns /dev/null into a regular file.
// Errors other than a missing file (a permission denied on a parent, say) are returned as they are.
func CheckWriteTarget(path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return notRegular(path, st.Mode())
	}
	return nil
}

// OpenRegular opens path for reading if it is a regular file (symbolic links followed); anything
// else is refused, without blocking, with an error naming path that wraps ErrNotRegular. Opening a
// FIFO for reading waits for a writer, so on Unix the file is opened with O_NONBLOCK (which changes
// nothing for a regular file) and checked with fstat before anything reads it; elsewhere path is
// stat'ed before it is opened.
func OpenRegular(path string) (*os.File, error) {
	if openNonblock == 0 {
		st, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() {
			return nil, notRegular(path, st.Mode())
		}
	}
	f, err := os.OpenFile(path, os.O_RDONLY|openNonblock, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		_ = f.Close()
		return nil, notRegular(path, st.Mode())
	}
	return f, nil
}

// ReadRegular reads the whole of path like os.ReadFile, refusing a path that is not a regular file
// as OpenRegular does. A missing file gives an error satisfying errors.Is(err, fs.ErrNotExist).
func ReadRegular(path string) ([]byte, error) {
	f, err := OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// temps is the registry of temporary files and directories in progress (RegisterTemp).
var temps struct {
	sync.Mutex
	paths  map[string]bool
	closed bool // RemoveTemps has run
}

// RegisterTemp records path, a temporary file or directory the caller has just created, so that
// RemoveTemps deletes it if the process is interrupted before the caller is done with it. Call the
// returned forget once path has been renamed into place or removed (calling it again does
// nothing). Once RemoveTemps has run, RegisterTemp removes path itself and returns an error
// wrapping ErrInterrupted.
func RegisterTemp(path string) (forget func(), err error) {
	_, forget, err = createRegistered(path, func() (string, error) { return path, nil })
	if errors.Is(err, ErrInterrupted) {
		_ = os.RemoveAll(path)
	}
	return forget, err
}

// CreateTemp is os.CreateTemp(dir, pattern) with the new file registered (RegisterTemp) under the
// same lock RemoveTemps takes, so an interrupt can never fall between the file's creation and its
// registration and leave it behind. Call forget once the file is renamed into place or removed.
// After RemoveTemps it creates nothing and returns an error wrapping ErrInterrupted.
func CreateTemp(dir, pattern string) (f *os.File, forget func(), err error) {
	_, forget, err = createRegistered(dir, func() (string, error) {
		f, err = os.CreateTemp(dir, pattern)
		if err != nil {
			return "", err
		}
		return f.Name(), nil
	})
	return f, forget, err
}

// MkdirTemp is os.MkdirTemp(dir, pattern) registered as CreateTemp registers a file: the whole
// directory goes on an interrupt.
func MkdirTemp(dir, pattern string) (path string, forget func(), err error) {
	return createRegistered(dir, func() (string, error) { return os.MkdirTemp(dir, pattern) })
}

// createRegistered runs create and registers the path it made, both under the registry's lock.
func createRegistered(dir string, create func() (string, error)) (string, func(), error) {
	temps.Lock()
	defer temps.Unlock()
	if temps.closed {
		return "", nil, fmt.Errorf("%s: %w", dir, ErrInterrupted)
	}
	path, err := create()
	if err != nil {
		return "", nil, err
	}
	if temps.paths == nil {
		temps.paths = map[string]bool{}
	}
	temps.paths[path] = true
	return path, func() {
		temps.Lock()
		defer temps.Unlock()
		delete(temps.paths, path)
	}, nil
}

// RemoveTemps deletes (os.RemoveAll) every path registered with RegisterTemp and not yet
// forgotten, and makes later registrations and WriteAtomic renames fail with ErrInterrupted. The
// command's signal handler calls it just before exiting, so that an interrupt leaves no partial
// output behind; a rename that WriteAtomic completed before it ran stands (that output is whole).
// It returns the paths it removed.
func RemoveTemps() []string {
	temps.Lock()
	defer temps.Unlock()
	temps.closed = true
	var removed []string
	for p := range temps.paths {
		if os.RemoveAll(p) == nil {
			removed = append(removed, p)
		}
	}
	temps.paths = nil
	return removed
}

// renameTemp renames the registered temporary file tmp over path and forgets it, under the
// registry's lock so that it happens either wholly before RemoveTemps or not at all.
func renameTemp(tmp, path string) error {
	temps.Lock()
	defer temps.Unlock()
	if temps.closed {
		return fmt.Errorf("%s: %w", path, ErrInterrupted)
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	delete(temps.paths, tmp)
	return nil
}

// WriteAtomic creates or replaces path with what fill writes, through a temporary file in the same
// directory (named "."+base(path)+".tmp…", mode 0644) that is synced and renamed over path only
// when fill succeeds, so an error leaves no half-written file behind. The temporary file is
// registered with RegisterTemp while it exists (temporary names are unique), so RemoveTemps deletes it on an interrupt. A path
// that exists and is not a regular file (a device such as /dev/null, a FIFO, a socket, a
// directory) is refused before anything is created, with an error naming path that wraps
// ErrNotRegular: writing through a rename would replace the node, and writing into it directly
// would lose the guarantee that nothing half-written is left. The directory of path must exist.
func WriteAtomic(path string, fill func(w io.Writer) error) (err error) {
	if err := CheckWriteTarget(path); err != nil {
		return err
	}
	f, forget, err := CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
		forget()
	}()
	if err = fill(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	if err = CheckWriteTarget(path); err != nil {
		return err
	}
	return renameTemp(tmp, path)
}
