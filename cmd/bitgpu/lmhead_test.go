package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// TestLMHeadFlag: generate's --lm-head reaches both CPU backends (--device cpu and cpuref) — the
// seeded text of each head (temperature 1.5, so a small logit difference shows) equals the CPU
// reference's built with that head, and the two heads' texts differ on this model and prompt
// (so a flag that was ignored would fail one of them) — and an unknown head is one error line
// naming the flag, for generate and perplexity alike.
func TestLMHeadFlag(t *testing.T) {
	path := synthFile(t)
	m, err := model.Open(path)
	require.NoError(t, err)
	defer m.Close()
	texts := map[cpuref.LMHead]string{}
	for _, h := range []cpuref.LMHead{cpuref.LMHeadF16, cpuref.LMHeadQ8_0} {
		b, err := cpuref.New(m, 64, cpuref.WithLMHead(h))
		require.NoError(t, err)
		smp, err := runtime.NewSampler(runtime.SamplerOptions{Temperature: 1.5, TopP: 1, RepeatPenalty: 1, Seed: 3})
		require.NoError(t, err)
		want, err := runtime.Generate(b, m.Tokenizer, runtime.EncodePrompt(m.Tokenizer, "hello"), runtime.GenerateOptions{MaxTokens: 24, Context: 64, IgnoreEOS: true, Sampler: smp})
		require.NoError(t, err)
		for _, dev := range []string{"cpu", "cpuref"} {
			out, errOut, code := runCLI(t, nil, "generate", "-m", path, "-p", "hello", "-n", "24", "--temp", "1.5", "--top-k", "0", "--top-p", "1", "--repeat-penalty", "1", "--seed", "3", "--ignore-eos", "--ctx", "64", "--device", dev, "--lm-head", string(h))
			require.Equal(t, 0, code, errOut)
			require.Equal(t, want.Text, out, "--device %s --lm-head %s", dev, h)
		}
		texts[h] = want.Text
	}
	require.NotEqual(t, texts[cpuref.LMHeadF16], texts[cpuref.LMHeadQ8_0])

	out, errOut, code := runCLI(t, nil, "generate", "-m", path, "-p", "hello", "--device", "cpu", "--lm-head", "q4_0")
	requireOneErrorLine(t, out, errOut, code, `--lm-head "q4_0"`)
	out, errOut, code = runCLI(t, nil, "perplexity", "-m", path, "-f", path, "--device", "cpu", "--lm-head", "f32")
	requireOneErrorLine(t, out, errOut, code, `--lm-head "f32"`)
}
