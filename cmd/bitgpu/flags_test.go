package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestVersion(t *testing.T) {
	out, errOut, code := runCLI(t, nil, "--version")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, regexp.MustCompile(`^bitgpu \S+ \(commit \S+, go1\.\d+\S*, \w+/\w+, tags: [^,]+, CGO_ENABLED=\S+, with(out)? the Vulkan backend\)\n$`), out)
}

// TestBuiltinModelEverywhere: inspect and tokenize work without a file, like generate; the
// "no -m given" notice appears only with -v.
func TestBuiltinModelEverywhere(t *testing.T) {
	out, errOut, code := runCLI(t, nil, "inspect")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "file:        bitgpu-tiny.gguf")
	require.Contains(t, out, "arch:        bitnet-b1.58")
	require.Empty(t, errOut)

	out, errOut, code = runCLI(t, nil, "tokenize", "Hello world")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `^\d+( \d+)*\n$`, out)
	require.Empty(t, errOut)

	_, errOut, code = runCLI(t, nil, "tokenize", "-v", "Hello world")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "no -m given; using the built-in model bitgpu-tiny")

	_, errOut, code = runCLI(t, nil, "generate", "-p", "The", "-n", "2", "--temp", "0", "--device", "cpu")
	require.Equal(t, 0, code, errOut)
	require.NotContains(t, errOut, "no -m given")
}

// TestPromptSources: -p TEXT, -p - (stdin) and -f FILE give the same text; both or neither is one
// error line.
func TestPromptSources(t *testing.T) {
	path := synthFile(t)
	args := []string{"generate", "-m", path, "-n", "6", "--temp", "0", "--device", "cpu"}
	ref, errOut, code := runCLI(t, nil, append(args, "-p", "hello world")...)
	require.Equal(t, 0, code, errOut)
	out, errOut, code := runBitgpu(t, nil, strings.NewReader("hello world"), append(args, "-p", "-"))
	require.Equal(t, 0, code, errOut)
	require.Equal(t, ref, out)
	file := filepath.Join(t.TempDir(), "prompt.txt")
	require.NoError(t, os.WriteFile(file, []byte("hello world"), 0o644))
	out, errOut, code = runCLI(t, nil, append(args, "-f", file)...)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, ref, out)

	out, errOut, code = runCLI(t, nil, append(args, "-f", file, "-p", "x")...)
	requireOneErrorLine(t, out, errOut, code, "-p and -f")
	out, errOut, code = runCLI(t, nil, args...)
	requireOneErrorLine(t, out, errOut, code, "-p TEXT or -f FILE is required")
	out, errOut, code = runCLI(t, nil, append(args, "-f", filepath.Join(t.TempDir(), "none.txt"))...)
	requireOneErrorLine(t, out, errOut, code, "-f: ", "none.txt")
}

// TestSamplingAndStopFlags: --seed -1 draws a seed that -v prints and that reproduces the text;
// --stop cuts the text before the stop string; --min-p and --seed are range-checked;
// --ignore-eos is accepted.
func TestSamplingAndStopFlags(t *testing.T) {
	path := synthFile(t)
	args := []string{"generate", "-m", path, "-p", "hello world", "-n", "16", "--temp", "0.9", "--device", "cpu"}
	out, errOut, code := runCLI(t, nil, append(args, "--seed", "-1", "-v")...)
	require.Equal(t, 0, code, errOut)
	m := regexp.MustCompile(`(?m)^bitgpu: --seed (\d+) \(random\)$`).FindStringSubmatch(errOut)
	require.NotNil(t, m, errOut)
	again, errOut, code := runCLI(t, nil, append(args, "--seed", m[1])...)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, out, again, "the printed seed reproduces the text")

	ref, _, code := runCLI(t, nil, append(args, "--seed", "3", "--ignore-eos")...)
	require.Equal(t, 0, code)
	require.GreaterOrEqual(t, len(ref), 8, "%q", ref)
	stop := ref[4:7]
	out, errOut, code = runCLI(t, nil, append(args, "--seed", "3", "--ignore-eos", "--stop", "\x01never", "--stop", stop)...)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, ref[:strings.Index(ref, stop)], out)

	out, errOut, code = runCLI(t, nil, append(args, "--min-p", "2")...)
	requireOneErrorLine(t, out, errOut, code, "--min-p 2: must be in [0, 1]")
	out, errOut, code = runCLI(t, nil, append(args, "--seed", "-2")...)
	requireOneErrorLine(t, out, errOut, code, "--seed -2:")
	out, errOut, code = runCLI(t, nil, append(args, "--seed", "3", "--min-p", "0.05")...)
	require.Equal(t, 0, code, errOut)
	require.NotEmpty(t, out)
}
