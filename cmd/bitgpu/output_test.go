//go:build unix

package main

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// noGPU is the environment of runs that must fail before they look for a device.
var noGPU = []string{"VK_ICD_FILENAMES=/nonexistent/icd.json", "VK_DRIVER_FILES=/nonexistent/icd.json"}

// requireDirHolds fails unless dir holds exactly the names given (no temporary file left).
func requireDirHolds(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	require.ElementsMatch(t, names, got)
}

func TestOutputsRefuseNonRegularTargets(t *testing.T) {
	hf := filepath.Join(t.TempDir(), "hf")
	require.NoError(t, os.Mkdir(hf, 0o755))
	require.NoError(t, model.WriteSyntheticHF(hf, model.SynthOptions{Vocab: 300, Dim: 256, Layers: 1, Heads: 4, KVHeads: 2, FFN: 512, Ctx: 64}))
	dir := t.TempDir()
	fifo := filepath.Join(dir, "out")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	missing := filepath.Join(dir, "missing")
	notRegular := fifo + ": not a regular file (it is a named pipe)"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"synth", "-o", fifo}, "bitgpu: --output " + notRegular},
		{[]string{"synth", "--preset", "2b4t", "-o", fifo}, "bitgpu: --output " + notRegular},
		{[]string{"convert", hf, "-o", fifo}, "bitgpu: --output " + notRegular},
		{[]string{"bench", "kernels", "--json", fifo}, "bitgpu: --json " + notRegular},
		{[]string{"bench", "e2e", "--json", fifo}, "bitgpu: --json " + notRegular},
		{[]string{"bench", "kernels", "--plot", fifo}, "bitgpu: --plot " + fifo + ": not a directory"},
		// Parents are not created: `make bench` makes its results directory itself.
		{[]string{"bench", "kernels", "--json", filepath.Join(missing, "k.json")}, "bitgpu: --json " + filepath.Join(missing, "k.json") + ": directory " + missing + " does not exist"},
		{[]string{"bench", "e2e", "--plot", missing}, "bitgpu: --plot " + missing + ": no such directory"},
		{[]string{"synth", "-o", filepath.Join(missing, "x.gguf")}, "bitgpu: --output " + filepath.Join(missing, "x.gguf") + ": directory " + missing + " does not exist"},
	} {
		if c.args[0] == "bench" && !haveVulkan {
			continue // no bench without the Vulkan backend (TestBuildWithoutCgo)
		}
		stdout, stderr, code := runCLI(t, noGPU, c.args...)
		require.Equal(t, 1, code, "%v: %s", c.args, stderr)
		require.Empty(t, stdout)
		require.Equal(t, c.want+"\n", stderr, c.args)
		st, err := os.Lstat(fifo)
		require.NoError(t, err)
		require.NotZero(t, st.Mode()&fs.ModeNamedPipe, "%v replaced the FIFO: %v", c.args, st.Mode())
		requireDirHolds(t, dir, "out")
	}
}

func TestSynthRefusesEmptyOutputAndAbsurdShapes(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.gguf")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"synth", "-o", ""}, "bitgpu: --output: empty file name"},
		{[]string{"synth", "-o", out, "--dim", "1000000000"}, "bitgpu: --dim 1000000000: too large: projection blk.N.attn_q.weight would have 1000000000000000000 elements"},
		{[]string{"synth", "-o", out, "--layers", "100000000"}, "bitgpu: --layers 100000000: too large: synth writes at most 4096"},
		{[]string{"synth", "-o", out, "--vocab", "1000000000"}, "bitgpu: --vocab 1000000000: too large: synth writes at most 2097152"},
		{[]string{"synth", "-o", out, "--dim", "40960", "--heads", "32", "--kv-heads", "8", "--ffn", "40960", "--layers", "100"},
			"bitgpu: --dim 40960: too large: vocab 300, dim 40960, 100 layers and ffn 40960 make a model file of about"},
	} {
		stdout, stderr, code := runCLI(t, nil, c.args...)
		require.Equal(t, 1, code, "%v: %s", c.args, stderr)
		require.Empty(t, stdout)
		require.Equal(t, 1, strings.Count(stderr, "\n"), "one error line: %q", stderr)
		require.True(t, strings.HasPrefix(stderr, c.want), "%v: %q", c.args, stderr)
		requireDirHolds(t, dir)
	}
}

// TestInterruptRemovesPartialOutput interrupts `synth --preset 2b4t` (tens of seconds of work)
// as soon as its temporary file appears: the process reports one line, exits 128 + the signal
// and leaves nothing in the output directory.
func TestInterruptRemovesPartialOutput(t *testing.T) {
	for _, c := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		t.Run(c.sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "synth", "--preset", "2b4t", "-o", filepath.Join(dir, "x.gguf"))
			cmd.Env = append(os.Environ(), "BITGPU_TEST_MAIN=1")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			require.NoError(t, cmd.Start())
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			defer func() { _ = cmd.Process.Kill() }()
			deadline := time.After(60 * time.Second)
			for {
				if m, _ := filepath.Glob(filepath.Join(dir, ".x.gguf.tmp*")); len(m) > 0 {
					break
				}
				select {
				case err := <-exited:
					t.Fatalf("synth ended before writing (%v): %s", err, stderr.String())
				case <-deadline:
					t.Fatal("no temporary file after 60 s")
				case <-time.After(5 * time.Millisecond):
				}
			}
			require.NoError(t, cmd.Process.Signal(c.sig))
			var err error
			select {
			case err = <-exited:
			case <-time.After(30 * time.Second):
				t.Fatal("synth did not exit after the signal")
			}
			ee, ok := err.(*exec.ExitError)
			require.True(t, ok, "exit: %v", err)
			require.Equal(t, c.code, ee.ExitCode(), "stderr: %s", stderr.String())
			require.Equal(t, "bitgpu: interrupted\n", stderr.String())
			require.Empty(t, stdout.String())
			requireDirHolds(t, dir)
		})
	}
}
