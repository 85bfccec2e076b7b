package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/runtime"
)

// defaultPerplexityCtx is the default --ctx of perplexity (llama.cpp's default), capped at the
// model's context length.
const defaultPerplexityCtx = 512

// perplexityCmd is `bitgpu perplexity -m FILE -f TEXT [--ctx N] [--chunks K] [--device auto|gpu|cpu|cpuref]`.
var perplexityCmd = &cobra.Command{
	Use:   "perplexity -m FILE -f TEXT",
	Short: "Measure the model's perplexity on a text file",
	Long: `Measure perplexity on the text file TEXT. The text is tokenized without BOS (special-token
text stays plain text). Window w (0..K-1) is tokens [w*N, w*N+N] (N+1 tokens, N = --ctx): its
first N tokens are evaluated from an empty KV cache, and its NLL is the mean negative
log-likelihood of its N next-token predictions. ppl = exp(mean NLL over the windows). K is
--chunks, or as many whole windows as the text holds. One line per window, then "ppl: X" as the
last line of stdout; speed and peak memory on stderr.`,
	Args: cobra.NoArgs,
	RunE: runPerplexity,
}

func init() {
	f := perplexityCmd.Flags()
	addModelFlags(perplexityCmd, fmt.Sprintf("window: predictions per window (default %d, at most the model's context)", defaultPerplexityCtx))
	f.StringP("file", "f", "", "text file (required)")
	f.Int("chunks", 0, "windows to evaluate (default: all that fit)")
	_ = perplexityCmd.MarkFlagRequired("file")
	rootCmd.AddCommand(perplexityCmd)
}

// runPerplexity is the perplexity command.
func runPerplexity(cmd *cobra.Command, _ []string) (err error) {
	f := cmd.Flags()
	chunks, _ := f.GetInt("chunks")
	if chunks < 0 {
		return fmt.Errorf("--chunks %d: must be positive", chunks)
	}
	file, _ := f.GetString("file")
	text, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	sess, err := openSession(cmd, defaultPerplexityCtx)
	if err != nil {
		return err
	}
	defer closeInto(&err, sess)
	m, b, n := sess.m, sess.b, sess.ctx
	tokens := m.Tokenizer.Encode(string(text), false)
	fit := runtime.Windows(len(tokens), n)
	if fit == 0 {
		return fmt.Errorf("%s: the text is %d tokens, too short for one window of %d predictions (needs %d; lower --ctx)", file, len(tokens), n, n+1)
	}
	if chunks > fit {
		return fmt.Errorf("--chunks %d: %s holds %d windows of %d predictions (%d tokens)", chunks, file, fit, n, len(tokens))
	}
	stderr := cmd.ErrOrStderr()
	k := fit
	if chunks > 0 {
		k = chunks
	}
	stdout := cmd.OutOrStdout()
	res, err := runtime.PerplexityWith(b, tokens, n, runtime.PerplexityOptions{
		Chunks: chunks,
		OnWindow: func(w int, nll float64) {
			fmt.Fprintf(stdout, "window %d/%d: nll %.6f\n", w+1, k, nll)
		},
		Progress: progressOut(stderr), ProgressAfter: runtime.DefaultProgressAfter, // a bar on a terminal
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%d windows of %d predictions (%d of %d tokens), %.2f tok/s; peak memory: %s\n",
		len(res.WindowNLL), n, res.Predictions, len(tokens), float64(res.Predictions)/res.Time.Seconds(), gpu.FormatBytes(peakMemory()))
	_, err = fmt.Fprintf(stdout, "ppl: %.4f\n", res.PPL)
	return err
}
