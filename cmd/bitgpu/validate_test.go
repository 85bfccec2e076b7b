package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeLog is a device whose validation layer reported msgs.
type fakeLog []string

func (f fakeLog) ValidationMessages() []string { return f }

func TestReportValidationPrintsEveryMessage(t *testing.T) {
	defer func(old []validationSource) { watched.devs = old }(watched.devs)
	watched.devs = nil
	var buf bytes.Buffer
	require.NoError(t, reportValidation(&buf), "no devices: nothing to report")
	watchValidation(fakeLog(nil))
	require.NoError(t, reportValidation(&buf), "validation off or clean: nothing to report")
	require.Empty(t, buf.String())

	watchValidation(fakeLog{"Validation Error: [ VUID-x ] first\nsecond line", "SYNC-HAZARD-READ-AFTER-WRITE"})
	err := reportValidation(&buf)
	require.ErrorContains(t, err, "reported 2 message(s)")
	require.Equal(t, "bitgpu: validation: Validation Error: [ VUID-x ] first\\nsecond line\n"+
		"bitgpu: validation: SYNC-HAZARD-READ-AFTER-WRITE\n", buf.String())
}

// TestRunFailsOnValidationMessages: a command that succeeds still exits 1 when a device it opened
// collected validation messages, after printing them.
func TestRunFailsOnValidationMessages(t *testing.T) {
	defer func(old []validationSource) { watched.devs = old }(watched.devs)
	watched.devs = []validationSource{fakeLog{"VUID-VkBufferCreateInfo-size-00912"}}
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	require.NoError(t, err)
	old := os.Stderr
	os.Stderr = f
	code := run([]string{"help"}) // succeeds whatever flags earlier in-process tests left set
	os.Stderr = old
	require.NoError(t, f.Close())
	errOut, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	require.Equal(t, 1, code)
	lines := strings.Split(strings.TrimSuffix(string(errOut), "\n"), "\n")
	require.Equal(t, []string{
		"bitgpu: validation: VUID-VkBufferCreateInfo-size-00912",
		"bitgpu: the Vulkan validation layer reported 1 message(s) (BITGPU_VALIDATE=1)",
	}, lines)
}
