package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/internal/fsutil"
	"github.com/bitgpu/bitgpu/runtime"
)

// generateCmd is `bitgpu generate [-m FILE] -p TEXT [-n 128] [sampling flags] [--ctx N]
// [--device auto|gpu|cpu|cpuref]`: the generated text alone on stdout, streamed; one stats line on stderr.
var generateCmd = &cobra.Command{
	Use:   "generate [-m FILE] -p TEXT",
	Short: "Continue a prompt; the text on stdout, stats on stderr",
	Long: `Continue the prompt TEXT with the model and stream the generated text, and nothing else, to
stdout. The prompt starts with BOS when the tokenizer asks for it; special-token text in it (such
as <|eot_id|>) becomes the special token. Generation stops after -n tokens, at the end-of-text or
end-of-turn token, or at the end of the context. A final line on stderr gives the prompt tokens,
prefill speed, generated tokens, decode speed and peak memory.

Sampling: --temp 0 is greedy. Otherwise the logits go through --repeat-penalty (over the last
--repeat-last-n tokens), temperature, --top-k, --top-p, then one draw from a PCG generator seeded
with --seed (random when absent, and then printed in the stats line); the same seed gives the same
text on every backend.`,
	Args: cobra.NoArgs,
	RunE: runGenerate,
}

func init() {
	f := generateCmd.Flags()
	addModelFlags(generateCmd, fmt.Sprintf("context length in tokens (default %d, at most the model's)", bitgpu.DefaultContext))
	f.StringP("prompt", "p", "", "prompt text; - reads it from stdin (this or -f is required)")
	f.StringP("file", "f", "", "read the prompt from this file")
	f.IntP("n-predict", "n", 128, "tokens to generate; -1 until end of text or context")
	f.Bool("profile", false, "GPU: print the GPU time per decode step of each kernel, largest first, on stderr")
	f.StringArray("stop", nil, "stop when the text reaches this string, which is not printed (repeatable)")
	f.Bool("ignore-eos", false, "keep generating after the end-of-text and end-of-turn tokens")
	addSamplingFlags(generateCmd)
	rootCmd.AddCommand(generateCmd)
}

// addSamplingFlags adds the sampler flags shared by generate and chat.
func addSamplingFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.Float64("temp", 0.8, "temperature; 0 is greedy")
	f.Int("top-k", 40, "keep the K most likely tokens; 0 keeps all")
	f.Float64("top-p", 0.95, "keep the most likely tokens up to this probability mass, in (0, 1]")
	f.Float64("min-p", 0, "keep only tokens at least this fraction as likely as the most likely one, in [0, 1]; 0 is off")
	f.Int64("seed", -1, "random seed; -1 picks one at random (printed by -v and in the stats)")
	f.Float64("repeat-penalty", 1.0, "divide positive / multiply negative logits of recent tokens; 1 is off")
	f.Int("repeat-last-n", runtime.DefaultRepeatLastN, "tokens the repeat penalty looks back over; 0 off, -1 all")
}

// samplerFromFlags reads and validates the sampling flags and returns the sampler they describe;
// errors name the flag. seeded reports whether --seed was given (otherwise the seed is random
// and the sampler's Options() hold it).
func samplerFromFlags(cmd *cobra.Command) (*runtime.Sampler, bool, error) {
	o, seeded, err := samplerOptions(cmd)
	if err != nil {
		return nil, false, err
	}
	s, err := runtime.NewSampler(o)
	return s, seeded, err
}

// samplerOptions reads and validates the sampling flags.
func samplerOptions(cmd *cobra.Command) (o runtime.SamplerOptions, seeded bool, err error) {
	f := cmd.Flags()
	o.Temperature, _ = f.GetFloat64("temp")
	o.TopK, _ = f.GetInt("top-k")
	o.TopP, _ = f.GetFloat64("top-p")
	o.MinP, _ = f.GetFloat64("min-p")
	seed, _ := f.GetInt64("seed")
	o.RepeatPenalty, _ = f.GetFloat64("repeat-penalty")
	o.RepeatLastN, _ = f.GetInt("repeat-last-n")
	switch {
	case math.IsNaN(o.Temperature) || math.IsInf(o.Temperature, 0) || o.Temperature < 0:
		return o, false, fmt.Errorf("--temp %v: must be finite and >= 0", o.Temperature)
	case o.TopK < 0:
		return o, false, fmt.Errorf("--top-k %d: must be >= 0 (0 keeps every token)", o.TopK)
	case !(o.TopP > 0 && o.TopP <= 1):
		return o, false, fmt.Errorf("--top-p %v: must be in (0, 1]", o.TopP)
	case !(o.RepeatPenalty > 0) || math.IsInf(o.RepeatPenalty, 0):
		return o, false, fmt.Errorf("--repeat-penalty %v: must be finite and > 0", o.RepeatPenalty)
	case o.RepeatLastN < -1:
		return o, false, fmt.Errorf("--repeat-last-n %d: must be >= -1", o.RepeatLastN)
	case !(o.MinP >= 0 && o.MinP <= 1):
		return o, false, fmt.Errorf("--min-p %v: must be in [0, 1]", o.MinP)
	case seed < -1:
		return o, false, fmt.Errorf("--seed %d: must be >= 0, or -1 for a random seed", seed)
	}
	if o.RepeatLastN == 0 {
		o.RepeatPenalty = 1 // an empty window penalises nothing
	}
	seeded = seed >= 0
	o.Seed = uint64(seed)
	if !seeded {
		o.Seed = rand.Uint64() >> 1 // a seed --seed can give back
		if verbose && o.Temperature > 0 {
			fmt.Fprintf(cmd.ErrOrStderr(), "bitgpu: --seed %d (random)\n", o.Seed)
		}
	}
	return o, seeded, nil
}

// runGenerate is the generate command.
func runGenerate(cmd *cobra.Command, _ []string) (err error) {
	f := cmd.Flags()
	s, seeded, err := samplerFromFlags(cmd)
	if err != nil {
		return err
	}
	n, _ := f.GetInt("n-predict")
	if n < -1 {
		return fmt.Errorf("-n %d: must be >= 0, or -1 for no limit", n)
	}
	prompt, err := promptFromFlags(cmd)
	if err != nil {
		return err
	}
	stops, _ := f.GetStringArray("stop")
	ignoreEOS, _ := f.GetBool("ignore-eos")
	sess, err := openSession(cmd, 0)
	if err != nil {
		return err
	}
	defer closeInto(&err, sess)
	m, b, ctx := sess.m, sess.b, sess.ctx
	stderr := cmd.ErrOrStderr()
	profile, _ := cmd.Flags().GetBool("profile")
	if profile {
		if err := enableProfile(b); err != nil {
			return err
		}
	}
	ids := runtime.EncodePrompt(m.Tokenizer, prompt)
	if len(ids) == 0 {
		return errors.New("-p: the prompt is empty and the model adds no BOS token")
	}
	if len(ids) > ctx {
		return fmt.Errorf("-p: the prompt is %d tokens, the context holds %d (--ctx; the model allows up to %d)", len(ids), ctx, m.Config.ContextLength)
	}
	stdout := cmd.OutOrStdout()
	st, err := runtime.Generate(b, m.Tokenizer, ids, runtime.GenerateOptions{
		MaxTokens: n, Context: ctx, Sampler: s, Stop: stops, IgnoreEOS: ignoreEOS,
		Progress: progressOut(stderr), ProgressAfter: runtime.DefaultProgressAfter, // a bar for a long prefill on a terminal
		Emit: func(text string) error {
			_, err := io.WriteString(stdout, text)
			return err
		},
	})
	if err != nil {
		return err
	}
	// The stats line starts on a line of its own when stdout and stderr are one terminal, pipe or
	// file (2>&1): a newline on stderr ends an unterminated text; stdout keeps exactly the text,
	// and a separate stderr holds exactly the stats line.
	if st.Text != "" && !strings.HasSuffix(st.Text, "\n") && sameFile(os.Stdout, os.Stderr) {
		fmt.Fprintln(stderr)
	}
	seed := ""
	if so := s.Options(); so.Temperature > 0 && !seeded {
		seed = fmt.Sprintf("; seed %d", so.Seed)
	}
	fmt.Fprintf(stderr, "%s%s\n", statsLine(st, ctx), seed)
	if profile {
		printProfile(stderr, b)
	}
	return nil
}

// statsLine formats the stats line of generate and chat from st (totals, for chat): prompt tokens
// and prefill speed, generated tokens and decode speed, peak memory, and a note when generation
// stopped at the end of a context of ctx tokens.
func statsLine(st runtime.GenerateStats, ctx int) string {
	dec := "n/a"
	if st.DecodeCalls > 0 {
		dec = fmt.Sprintf("%.2f tok/s", st.DecodeTokensPerSecond())
	}
	line := fmt.Sprintf("prompt: %d tokens, prefill %.2f tok/s; generated: %d tokens, decode %s; peak memory: %s",
		st.PromptTokens, st.PrefillTokensPerSecond(), len(st.Tokens), dec, gpu.FormatBytes(peakMemory()))
	if st.Stop == runtime.StopContext {
		line += fmt.Sprintf("; stopped at the end of the context (%d tokens)", ctx)
	}
	return line
}

// promptFromFlags returns the prompt: -p TEXT, -p - (standard input, whole), or -f FILE. Exactly
// one of -p and -f must be given; errors name the flag or the file.
func promptFromFlags(cmd *cobra.Command) (string, error) {
	f := cmd.Flags()
	p, _ := f.GetString("prompt")
	file, _ := f.GetString("file")
	switch {
	case f.Changed("prompt") && f.Changed("file"):
		return "", errors.New("-p and -f: give the prompt one way")
	case f.Changed("file"):
		b, err := fsutil.ReadRegular(file)
		if err != nil {
			return "", fmt.Errorf("-f: %w", err)
		}
		return string(b), nil
	case !f.Changed("prompt"):
		return "", errors.New(`-p TEXT or -f FILE is required (-p - reads standard input)`)
	case p == "-":
		b, err := io.ReadAll(cmd.InOrStdin())
		if err != nil {
			return "", fmt.Errorf("-p -: standard input: %w", err)
		}
		return string(b), nil
	}
	return p, nil
}
