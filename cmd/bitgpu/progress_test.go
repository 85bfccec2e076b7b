package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// TestProgressBarsOnTerminalOnly: `synth` and `convert` draw progress bars (the stages'
// names, then the line cleared) when stderr is a terminal, and print nothing but their one
// "wrote" line when it is a pipe.
func TestProgressBarsOnTerminalOnly(t *testing.T) {
	tmp := t.TempDir()
	hf := filepath.Join(tmp, "hf")
	require.NoError(t, os.Mkdir(hf, 0o755))
	// A 4096-token vocabulary: a 2 MiB embedding, more than one 1 MiB write of the GGUF writer.
	require.NoError(t, model.WriteSyntheticHF(hf, model.SynthOptions{Vocab: 4096, Dim: 256, Layers: 1, Heads: 4, KVHeads: 2, FFN: 512, Ctx: 64}))
	for _, c := range []struct {
		name   string
		args   []string
		stages []string
	}{
		{"synth", []string{"synth", "--vocab", "4096", "-o"}, []string{"writing"}},
		{"convert", []string{"convert", hf, "--type", "tq2_0", "-o"}, []string{"converting", "encoding", "writing"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			piped := filepath.Join(tmp, c.name+"-piped.gguf")
			stdout, stderr, code := runCLI(t, nil, append(c.args, piped)...)
			require.Equal(t, 0, code, stderr)
			require.Empty(t, stdout)
			require.True(t, strings.HasPrefix(stderr, "wrote "+piped), "nothing before the wrote line on a pipe: %q", stderr)
			require.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
			require.NotContains(t, stderr, "\r", "no progress bar on a pipe")

			onTTY := filepath.Join(tmp, c.name+"-tty.gguf")
			s := startTTY(t, append(c.args, onTTY)...)
			select {
			case <-s.done:
			case <-time.After(60 * time.Second):
				t.Fatalf("%s did not end; the terminal shows:\n%s", c.name, s.output())
			}
			require.Equal(t, 0, s.wait(), s.output())
			out := s.output()
			for _, stage := range c.stages {
				require.Contains(t, out, stage, "a %s bar on a terminal", stage)
			}
			require.Contains(t, out, "\r", "the bar redraws its line")
			require.Contains(t, out, "wrote "+onTTY)
			a, err := os.ReadFile(piped)
			require.NoError(t, err)
			b, err := os.ReadFile(onTTY)
			require.NoError(t, err)
			require.Equal(t, a, b, "the same file with and without bars")
		})
	}
}
