package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// testSynth is a small synthetic BitNet b1.58 model (2 layers, dim 64, vocab 300, context 64):
// the CLI tests run it on the CPU in milliseconds.
var testSynth = model.SynthOptions{Vocab: 300, Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFN: 128, Ctx: 64, Seed: 5}

// synthFile writes testSynth into a temporary directory and returns its path.
func synthFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, model.WriteSynthetic(path, testSynth))
	return path
}

// openCPU opens path and a cpuref backend with the model's context, closed at the end of t.
func openCPU(t *testing.T, path string) (*model.Model, runtime.Backend) {
	t.Helper()
	m, err := model.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	b, err := cpuref.New(m, 0)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return m, b
}

// requireOneErrorLine checks a failed run: exit 1, nothing on stdout, one stderr line starting
// with "bitgpu: " and containing each of want.
func requireOneErrorLine(t *testing.T, out, errOut string, code int, want ...string) {
	t.Helper()
	require.Equal(t, 1, code, "stderr: %s", errOut)
	require.Empty(t, out)
	require.Equal(t, 1, strings.Count(errOut, "\n"), "one error line: %q", errOut)
	require.True(t, strings.HasPrefix(errOut, "bitgpu: "), errOut)
	for _, w := range want {
		require.Contains(t, errOut, w)
	}
}

func TestGenerateGreedyPrintsOnlyTheText(t *testing.T) {
	path := synthFile(t)
	m, b := openCPU(t, path)
	want, err := runtime.Generate(b, m.Tokenizer, runtime.EncodePrompt(m.Tokenizer, "hello world"), runtime.GenerateOptions{MaxTokens: 12})
	require.NoError(t, err)

	out, errOut, code := runCLI(t, nil, "generate", "-m", path, "-p", "hello world", "-n", "12", "--temp", "0", "--device", "cpu")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, want.Text, out, "stdout holds the generated text and nothing else")
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	require.Len(t, lines, 1, "one stats line: %q", errOut)
	require.Regexp(t, `^prompt: \d+ tokens, prefill [0-9.]+ tok/s; generated: \d+ tokens, decode ([0-9.]+ tok/s|n/a); peak memory: \d`, lines[0])
	require.Contains(t, lines[0], "generated: "+strconv.Itoa(len(want.Tokens))+" tokens")
	require.Contains(t, lines[0], "prompt: "+strconv.Itoa(want.PromptTokens)+" tokens")
}

func TestGenerateDeterministicAcrossRunsAndGOMAXPROCS(t *testing.T) {
	path := synthFile(t)
	for _, args := range [][]string{
		{"--temp", "0"},
		{"--temp", "0.9", "--top-k", "20", "--top-p", "0.9", "--seed", "11", "--repeat-penalty", "1.2"},
	} {
		argv := append([]string{"generate", "-m", path, "-p", "the cat", "-n", "16", "--device", "cpu"}, args...)
		ref, errOut, code := runCLI(t, []string{"GOMAXPROCS=1"}, argv...)
		require.Equal(t, 0, code, errOut)
		require.NotEmpty(t, ref)
		for _, procs := range []string{"1", "2"} {
			out, errOut, code := runCLI(t, []string{"GOMAXPROCS=" + procs}, argv...)
			require.Equal(t, 0, code, errOut)
			require.Equal(t, ref, out, "GOMAXPROCS=%s %v", procs, args)
		}
	}
}

func TestGenerateRandomSeedIsReported(t *testing.T) {
	path := synthFile(t)
	_, errOut, code := runCLI(t, nil, "generate", "-m", path, "-p", "a", "-n", "2", "--device", "cpu")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `; seed \d+\n$`, errOut)
}

func TestGenerateGPUFallsBackToCPU(t *testing.T) {
	path := synthFile(t)
	// No Vulkan driver: --device gpu must warn once and run on the CPU.
	noDriver := []string{"VK_ICD_FILENAMES=/nonexistent/icd.json", "VK_DRIVER_FILES=/nonexistent/icd.json"}
	out, errOut, code := runCLI(t, noDriver, "generate", "-m", path, "-p", "hello world", "-n", "5", "--temp", "0", "--device", "gpu")
	require.Equal(t, 0, code, errOut)
	ref, _, _ := runCLI(t, nil, "generate", "-m", path, "-p", "hello world", "-n", "5", "--temp", "0", "--device", "cpu")
	require.Equal(t, ref, out)
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	require.Len(t, lines, 2, errOut)
	require.Regexp(t, `^bitgpu: warning: no Vulkan device \(.+\); using --device cpu$`, lines[0])

	// The default, --device auto, takes the CPU without a word (and says why with -v).
	out, errOut, code = runCLI(t, noDriver, "generate", "-m", path, "-p", "hello world", "-n", "5", "--temp", "0")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, ref, out)
	require.Equal(t, 1, strings.Count(errOut, "\n"), "only the stats line: %q", errOut)
	_, errOut, code = runCLI(t, noDriver, "generate", "-m", path, "-p", "hello world", "-n", "5", "--temp", "0", "-v")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^bitgpu: --device auto: cpu: .*(no compatible driver|CGO_ENABLED=0)`, errOut)
}

// TestDeviceAutoSkipsCPUDevices: with only a CPU-type Vulkan device (lavapipe, SwiftShader: CI's
// drivers), --device auto runs the CPU backend and -v says why; --device gpu still runs Vulkan, and
// both give the CPU's tokens (the bit-exact contract), greedy and seeded.
func TestDeviceAutoSkipsCPUDevices(t *testing.T) {
	if os.Getenv("BITGPU_REQUIRE_GPU") != "1" {
		if _, _, code := runCLI(t, nil, "devices"); code != 0 {
			t.Skip("no Vulkan device")
		}
	}
	path := synthFile(t)
	for _, sampling := range [][]string{{"--temp", "0"}, {"--temp", "0.9", "--seed", "7"}} {
		args := append([]string{"generate", "-m", path, "-p", "hello world", "-n", "8", "-v"}, sampling...)
		ref, _, code := runCLI(t, nil, append(args, "--device", "cpu")...)
		require.Equal(t, 0, code)
		out, errOut, code := runCLI(t, nil, append(args, "--device", "auto")...)
		require.Equal(t, 0, code, errOut)
		require.Equal(t, ref, out)
		require.Regexp(t, `(?m)^bitgpu: --device auto: cpu: only CPU-type Vulkan devices \(.+\)`, errOut)
		require.NotContains(t, errOut, "memory plan", "auto did not open the Vulkan backend")

		out, errOut, code = runCLI(t, nil, append(args, "--device", "gpu")...)
		require.Equal(t, 0, code, errOut)
		require.Contains(t, errOut, "memory plan", "--device gpu ran the Vulkan backend")
		require.Equal(t, ref, out, "%v: GPU tokens equal the CPU's", sampling)
	}
}

func TestGenerateErrors(t *testing.T) {
	path := synthFile(t)
	long := strings.Repeat("word ", 100) // over 64 tokens
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"-m", filepath.Join(t.TempDir(), "missing.gguf"), "-p", "x"}, []string{"missing.gguf", "no such file"}},
		{[]string{"-m", path}, []string{`-p TEXT or -f FILE is required`}},
		{[]string{"-m", path, "-p", "x", "--top-p", "1.5"}, []string{"--top-p 1.5: must be in (0, 1]"}},
		{[]string{"-m", path, "-p", "x", "--top-p", "0"}, []string{"--top-p 0:"}},
		{[]string{"-m", path, "-p", "x", "--temp", "-1"}, []string{"--temp -1:"}},
		{[]string{"-m", path, "-p", "x", "--top-k", "-2"}, []string{"--top-k -2:"}},
		{[]string{"-m", path, "-p", "x", "--repeat-penalty", "0"}, []string{"--repeat-penalty 0:"}},
		{[]string{"-m", path, "-p", "x", "-n", "-5"}, []string{"-n -5:"}},
		{[]string{"-m", path, "-p", "x", "--ctx", "1000"}, []string{"--ctx 1000: exceeds the model's context length 64"}},
		{[]string{"-m", path, "-p", "x", "--device", "tpu"}, []string{`--device "tpu": want auto, gpu, cpu or cpuref`}},
		{[]string{"-m", path, "-p", "x", "-n", "notanumber"}, []string{"notanumber"}},
		{[]string{"-m", path, "-p", long, "--device", "cpu"}, []string{"-p: the prompt is", "the context holds 64"}},
		{[]string{"-m", path, "-p", "hello", "--device", "cpu", "--ctx", "2"}, []string{"-p: the prompt is", "the context holds 2"}},
	} {
		out, errOut, code := runCLI(t, nil, append([]string{"generate"}, c.args...)...)
		requireOneErrorLine(t, out, errOut, code, c.want...)
	}
}

func TestGenerateStopsAtContextEnd(t *testing.T) {
	path := synthFile(t)
	m, err := model.Open(path)
	require.NoError(t, err)
	defer m.Close()
	b, err := cpuref.New(m, 12)
	require.NoError(t, err)
	want, err := runtime.Generate(b, m.Tokenizer, runtime.EncodePrompt(m.Tokenizer, "hello"), runtime.GenerateOptions{MaxTokens: -1, Context: 12})
	require.NoError(t, err)

	out, errOut, code := runCLI(t, nil, "generate", "-m", path, "-p", "hello", "-n", "-1", "--temp", "0", "--ctx", "12", "--device", "cpu")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, want.Text, out)
	if want.Stop == runtime.StopContext {
		require.Contains(t, errOut, "; stopped at the end of the context (12 tokens)\n")
	} else {
		require.NotContains(t, errOut, "stopped at the end")
	}
}

// TestGenerateBuiltInModel: without -m, generate runs the model built into the binary and says so
// on stderr; greedy output is the same on every run.
func TestGenerateBuiltInModel(t *testing.T) {
	var outs []string
	for i := 0; i < 2; i++ {
		out, errOut, code := runCLI(t, nil, "generate", "-p", "The", "-n", "6", "--temp", "0", "--device", "cpu", "-v")
		require.Equal(t, 0, code, errOut)
		require.Contains(t, errOut, "using the built-in model bitgpu-tiny")
		require.NotEmpty(t, out)
		outs = append(outs, out)
	}
	require.Equal(t, outs[0], outs[1])
}

// TestStatsLineStartsItsOwnLine: with stdout and stderr on one pipe (2>&1), the stats line begins
// a line of its own after generated text that does not end in a newline, and stdout alone still
// holds exactly the generated text.
func TestStatsLineStartsItsOwnLine(t *testing.T) {
	args := []string{"generate", "-p", "The Python interpreter", "-n", "6", "--temp", "0", "--device", "cpu"}
	text, _, code := runCLI(t, nil, args...)
	require.Equal(t, 0, code)
	require.NotEmpty(t, text)
	require.False(t, strings.HasSuffix(text, "\n"), "the case under test: text without a final newline: %q", text)

	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "BITGPU_TEST_MAIN=1")
	var both bytes.Buffer
	cmd.Stdout, cmd.Stderr = &both, &both
	require.NoError(t, cmd.Run())
	lines := strings.Split(both.String(), "\n")
	require.True(t, strings.HasPrefix(lines[len(lines)-2], "prompt: "), "the stats line stands alone: %q", both.String())
	require.Contains(t, both.String(), text+"\nprompt: ")
}
