package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/model"
)

// synthCmd is `bitgpu synth -o FILE [--preset tiny|2b4t] [--type ...] [shape flags]`: writes a
// random-weight BitNet b1.58 GGUF (model.WriteSynthetic).
var synthCmd = &cobra.Command{
	Use:   "synth -o FILE",
	Short: "Write a random-weight BitNet b1.58 GGUF of any shape",
	Long: `Write a random-weight BitNet b1.58 GGUF (architecture bitnet-b1.58, tied F16 embedding,
F32 norms, a small byte-level BPE vocabulary), deterministic from --seed. --preset picks the
shapes (tiny: vocab 300, dim 256, 2 layers, 4 heads, 2 kv heads, ffn 768, ctx 256; 2b4t: the
shapes of BitNet b1.58 2B4T); the other flags override single values. --type encodes the
projections: i2_s, tq2_0, tq1_0 (widths a multiple of 256), or f16 (full-precision baseline).
--family picks the layout of a public ternary family: 2b4t (bitnet-b1.58: sub-norms, ReLU², NEOX
RoPE, tied embedding), onebit (1bitLLM as upstream llama.cpp's bitnet: SiLU, separate output),
llama158 (llama arch: Llama3-8B-1.58, Falcon3-1.58bit, Falcon-E — no sub-norms, SiLU, NORM RoPE,
separate output).`,
	Args: cobra.NoArgs,
	RunE: runSynth,
}

func init() {
	f := synthCmd.Flags()
	f.StringP("output", "o", "", "output GGUF file (required)")
	f.String("preset", "tiny", "shape preset: tiny or 2b4t")
	f.String("family", "2b4t", "layout: "+strings.Join(model.SynthFamilies, ", ")+" (architecture, sub-norms, gate, RoPE, tied or separate output)")
	f.String("type", "i2_s", "weight type: i2_s, tq2_0, tq1_0 or f16")
	f.Int("vocab", 0, "vocabulary size (at least 259)")
	f.Int("dim", 0, "hidden width")
	f.Int("layers", 0, "transformer blocks")
	f.Int("heads", 0, "attention heads")
	f.Int("kv-heads", 0, "key/value heads")
	f.Int("ffn", 0, "feed-forward width")
	f.Int("ctx", 0, "context length")
	f.Uint64("seed", 0, "random seed")
	f.Bool("block-scales", false, "tq1_0/tq2_0: a different scale in every 256-weight block (default: one per tensor, as BitNet checkpoints have)")
	_ = synthCmd.MarkFlagRequired("output")
	rootCmd.AddCommand(synthCmd)
}

// runSynth builds the options from the flags and writes the model.
func runSynth(cmd *cobra.Command, _ []string) error {
	f := cmd.Flags()
	out, _ := f.GetString("output")
	if err := checkOutputFile("--output", out); err != nil {
		return err
	}
	preset, _ := f.GetString("preset")
	opt, err := model.SynthPreset(preset)
	if err != nil {
		return fmt.Errorf("--preset: %w", err)
	}
	opt.Family, _ = f.GetString("family")
	if !slices.Contains(model.SynthFamilies, opt.Family) {
		return fmt.Errorf("--family %q: want one of %s", opt.Family, strings.Join(model.SynthFamilies, ", "))
	}
	typ, _ := f.GetString("type")
	switch strings.ToLower(typ) {
	case "i2_s":
		opt.Type = model.TypeI2_S
	case "tq2_0":
		opt.Type = model.TypeTQ2_0
	case "tq1_0":
		opt.Type = model.TypeTQ1_0
	case "f16":
		opt.Type = model.TypeF16
	default:
		return fmt.Errorf("--type %q: want i2_s, tq2_0, tq1_0 or f16", typ)
	}
	for _, o := range []struct {
		flag string
		dst  *int
	}{
		{"vocab", &opt.Vocab}, {"dim", &opt.Dim}, {"layers", &opt.Layers}, {"heads", &opt.Heads},
		{"kv-heads", &opt.KVHeads}, {"ffn", &opt.FFN}, {"ctx", &opt.Ctx},
	} {
		if !f.Changed(o.flag) {
			continue
		}
		v, _ := f.GetInt(o.flag)
		if v <= 0 {
			return fmt.Errorf("--%s %d: must be positive", o.flag, v)
		}
		*o.dst = v
	}
	opt.Seed, _ = f.GetUint64("seed")
	opt.BlockScales, _ = f.GetBool("block-scales")
	if _, err := opt.Config(); err != nil { // before any work, naming the flag at fault
		var se *model.SynthSizeError
		if errors.As(err, &se) {
			return fmt.Errorf("--%s %d: too large: %s", se.Option, se.Value, se.Reason)
		}
		return fmt.Errorf("%s: %w", out, err)
	}
	var done func()
	opt.Progress, done = modelProgress(cmd.ErrOrStderr()) // a bar on a terminal only
	err = model.WriteSynthetic(out, opt)
	done()
	if err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	cfg, _ := opt.Config()
	fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s: %d bytes, %d tensors (%s weights, vocab %d, dim %d, %d layers)\n",
		out, st.Size(), len(cfg.TensorSpecs()), opt.Type, cfg.VocabSize, cfg.Dim, cfg.Layers)
	return nil
}
