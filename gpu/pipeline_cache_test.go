//go:build unix && cgo

package gpu

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/internal/fsutil/fifotest"
)

// TestPipelineCacheIgnoresNonRegularPath points BITGPU_PIPELINE_CACHE at a FIFO: opening the
// device must not block reading it, and closing it must not replace it with a regular file.
func TestPipelineCacheIgnoresNonRegularPath(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "pipelines.bin")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	t.Setenv("BITGPU_PIPELINE_CACHE", fifo)
	err := fifotest.Within(t, fifo, 20*time.Second, "opening the device", func() error {
		d, err := Open(OptionsFromEnv())
		if err == nil {
			err = d.Close()
		}
		return err
	})
	if errors.Is(err, ErrNoDevice) && os.Getenv("BITGPU_REQUIRE_GPU") != "1" {
		t.Skipf("no Vulkan device: %v", err)
	}
	require.NoError(t, err)
	st, err := os.Lstat(fifo)
	require.NoError(t, err)
	require.NotZero(t, st.Mode()&fs.ModeNamedPipe, "the FIFO was replaced: %v", st.Mode())
	ents, err := os.ReadDir(filepath.Dir(fifo))
	require.NoError(t, err)
	require.Len(t, ents, 1, "no temporary file left")
}
