package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/runtime"
)

// bitgpuStdin runs the command like bitgpu, with stdin as its standard input.
func bitgpuStdin(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return runBitgpu(t, nil, strings.NewReader(stdin), args)
}

func TestChatTurnsOverStdin(t *testing.T) {
	path := synthFile(t)
	m, b := openCPU(t, path)
	c, err := runtime.NewChat(b, m.Tokenizer, m.Config.ChatTemplate, "Be brief.", runtime.GenerateOptions{MaxTokens: 6})
	require.NoError(t, err)
	var want strings.Builder
	for _, msg := range []string{"hello", "what now?"} {
		st, err := c.Send(msg)
		require.NoError(t, err)
		// Piped replies are one line each: backslash and newline escaped.
		want.WriteString(strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(st.Text) + "\n")
	}

	for _, stdin := range []string{
		"hello\n\nwhat now?\n/bye\nnot read\n", // an empty line is skipped; /bye ends
		"hello\nwhat now?",                     // end of input ends, even without a newline
	} {
		out, errOut, code := bitgpuStdin(t, stdin, "chat", "-m", path, "--system", "Be brief.", "--device", "cpu", "-n", "6", "--temp", "0")
		require.Equal(t, 0, code, errOut)
		require.Equal(t, want.String(), out)
		// The second turn no longer fits the 64-token context with the first: one notice, then
		// the stats line.
		require.Equal(t, "bitgpu: the conversation outgrew the context (--ctx 64): dropped the 2 oldest messages\n", errOut[:strings.Index(errOut, "\n")+1])
		require.Equal(t, 2, strings.Count(errOut, "\n"), "the notice and the stats line: %q", errOut)
		require.Contains(t, errOut, "\nprompt: ")
	}
}

func TestChatErrors(t *testing.T) {
	path := synthFile(t)
	out, errOut, code := bitgpuStdin(t, "hi\n", "chat", "-m", path, "--top-p", "2")
	requireOneErrorLine(t, out, errOut, code, "--top-p 2:")
	// A message longer than the context.
	out, errOut, code = bitgpuStdin(t, strings.Repeat("word ", 100)+"\n", "chat", "-m", path, "--device", "cpu", "-n", "2")
	require.Equal(t, 1, code)
	require.Empty(t, out)
	require.Equal(t, 1, strings.Count(errOut, "\n"), errOut)
	require.Contains(t, errOut, "the context holds 64")
}
