//go:build unix

package fsutil

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/internal/fsutil/fifotest"
)

// mkfifo makes a FIFO named name in a fresh temporary directory and returns its path and
// directory.
func mkfifo(t *testing.T, name string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, name)
	require.NoError(t, syscall.Mkfifo(p, 0o644))
	return p, dir
}

// requireFIFO fails unless path is still a FIFO.
func requireFIFO(t *testing.T, path string) {
	t.Helper()
	st, err := os.Lstat(path)
	require.NoError(t, err)
	require.NotZero(t, st.Mode()&fs.ModeNamedPipe, "%s is no longer a FIFO: %v", path, st.Mode())
}

// requireOnly fails unless dir holds exactly the names given.
func requireOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	require.ElementsMatch(t, names, got)
}

func TestWriteAtomicRefusesNonRegularTargets(t *testing.T) {
	fifo, dir := mkfifo(t, "out.gguf")
	sub := filepath.Join(dir, "sub")
	require.NoError(t, os.Mkdir(sub, 0o755))
	fill := func(w io.Writer) error { _, err := w.Write([]byte("data")); return err }
	for _, target := range []string{fifo, sub} {
		err := WriteAtomic(target, fill)
		require.ErrorIs(t, err, ErrNotRegular)
		require.ErrorContains(t, err, target+": not a regular file")
		require.NoError(t, CheckWriteTarget(filepath.Join(dir, "absent")))
		require.ErrorIs(t, CheckWriteTarget(target), ErrNotRegular)
	}
	require.ErrorContains(t, WriteAtomic(fifo, fill), "(it is a named pipe)")
	require.ErrorContains(t, WriteAtomic(sub, fill), "(it is a directory)")
	requireFIFO(t, fifo)
	requireOnly(t, dir, "out.gguf", "sub")

	// A regular file and a new one are written; nothing else is left in the directory.
	reg := filepath.Join(dir, "reg")
	require.NoError(t, os.WriteFile(reg, []byte("old"), 0o600))
	require.NoError(t, WriteAtomic(reg, fill))
	require.NoError(t, WriteAtomic(filepath.Join(dir, "new"), fill))
	b, err := os.ReadFile(reg)
	require.NoError(t, err)
	require.Equal(t, "data", string(b))
	requireOnly(t, dir, "out.gguf", "sub", "reg", "new")
}

func TestReadRegularRefusesFIFOWithoutBlocking(t *testing.T) {
	fifo, dir := mkfifo(t, "config.json")
	err := fifotest.Within(t, fifo, 5*time.Second, "reading", func() error { _, err := ReadRegular(fifo); return err })
	require.ErrorIs(t, err, ErrNotRegular)
	require.ErrorContains(t, err, fifo+": not a regular file (it is a named pipe)")
	err = fifotest.Within(t, fifo, 5*time.Second, "reading", func() error {
		f, err := OpenRegular(fifo)
		if err == nil {
			f.Close()
		}
		return err
	})
	require.ErrorIs(t, err, ErrNotRegular)
	_, err = ReadRegular(dir)
	require.ErrorIs(t, err, ErrNotRegular)
	_, err = ReadRegular(filepath.Join(dir, "absent"))
	require.ErrorIs(t, err, fs.ErrNotExist)

	reg := filepath.Join(dir, "reg")
	require.NoError(t, os.WriteFile(reg, []byte("hello"), 0o644))
	b, err := ReadRegular(reg)
	require.NoError(t, err)
	require.Equal(t, "hello", string(b))
}

func TestRemoveTempsDrainsTheRegistry(t *testing.T) {
	t.Cleanup(func() { temps.Lock(); temps.closed = false; temps.paths = nil; temps.Unlock() })
	dir := t.TempDir()
	f := filepath.Join(dir, ".f.tmp1")
	d := filepath.Join(dir, "bench-1")
	kept := filepath.Join(dir, "kept")
	for _, p := range []string{f, kept} {
		require.NoError(t, os.WriteFile(p, nil, 0o644))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(d, "sub"), 0o755))
	_, err := RegisterTemp(f)
	require.NoError(t, err)
	_, err = RegisterTemp(d)
	require.NoError(t, err)
	forget, err := RegisterTemp(kept)
	require.NoError(t, err)
	forget()

	require.ElementsMatch(t, []string{f, d}, RemoveTemps())
	requireOnly(t, dir, "kept")

	// After RemoveTemps nothing new is registered or written.
	late := filepath.Join(dir, "late")
	require.NoError(t, os.WriteFile(late, nil, 0o644))
	_, err = RegisterTemp(late)
	require.True(t, errors.Is(err, ErrInterrupted), "%v", err)
	err = WriteAtomic(filepath.Join(dir, "out"), func(w io.Writer) error { return nil })
	require.ErrorIs(t, err, ErrInterrupted)
	requireOnly(t, dir, "kept")
}
