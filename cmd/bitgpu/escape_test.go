package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

func TestPrintableEscapesControlCharacters(t *testing.T) {
	for in, want := range map[string]string{
		"plain name 1.58b":       "plain name 1.58b",
		"a\nbitgpu: forged":      `a\nbitgpu: forged`,
		"\x1b[31mred\x1b[0m":     `\x1b[31mred\x1b[0m`,
		"tab\there\r":            `tab\there\r`,
		"bidi \u202eevil":        `bidi \u202eevil`,
		"bad utf8 \xff\xfe":      `bad utf8 \xff\xfe`,
		"ünïcödé ok, 日本":         "ünïcödé ok, 日本",
		"c1 \u009b and del \x7f": `c1 \x9b and del \x7f`,
	} {
		require.Equal(t, want, printable(in), "%q", in)
	}
}

// hostileGGUF writes a tiny synthetic model whose general.name carries terminal escape sequences
// and which has one extra tensor whose name carries a newline followed by a forged error line.
func hostileGGUF(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "tiny.gguf")
	require.NoError(t, model.WriteSynthetic(src, model.SynthOptions{}))
	g, err := model.OpenGGUF(src)
	require.NoError(t, err)
	defer g.Close()
	g.Meta["general.name"] = "\x1b]0;owned\x07\x1b[2Jevil"
	if _, ok := g.Meta["general.name"]; ok && !contains(g.Keys, "general.name") {
		g.Keys = append(g.Keys, "general.name")
	}
	norm := *g.Tensor("output_norm.weight")
	norm.Name = "extra.weight\nbitgpu: all good"
	g.Tensors = append(g.Tensors, &norm)
	out := filepath.Join(dir, "hostile.gguf")
	require.NoError(t, model.WriteGGUFFile(out, g))
	return out
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func TestInspectEscapesFileStrings(t *testing.T) {
	path := hostileGGUF(t)
	out, errOut, code := runCLI(t, nil, "inspect", path)
	require.Equal(t, 1, code, "the extra tensor is not part of the model")
	require.NotContains(t, out, "\x1b", "no raw escape character reaches the terminal")
	require.NotContains(t, out, "\x07")
	require.Contains(t, out, `name:        \x1b]0;owned\x07\x1b[2Jevil`)
	require.Contains(t, out, `extra.weight\nbitgpu: all good`)
	require.Equal(t, 1, strings.Count(errOut, "\n"), "one error line: %q", errOut)
	require.True(t, strings.HasPrefix(errOut, "bitgpu: "), errOut)
	require.Contains(t, errOut, `\nbitgpu: all good`, "the forged line is escaped inside the one line")
}

func TestErrorsNamingFileStringsStayOneLine(t *testing.T) {
	path := hostileGGUF(t)
	out, errOut, code := runCLI(t, nil, "generate", "-m", path, "-p", "hi", "-n", "1", "--device", "cpu")
	require.Equal(t, 1, code)
	require.Empty(t, out)
	require.Equal(t, 1, strings.Count(errOut, "\n"), "one error line: %q", errOut)
	require.NotContains(t, errOut, "\nbitgpu: all good")
}
