package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/model"
)

// convertCmd is `bitgpu convert DIR -o FILE.gguf [--type i2_s|tq2_0|tq1_0]`: a Hugging Face
// ternary checkpoint directory (any model.HFLayout) to GGUF (model.ConvertHF).
var convertCmd = &cobra.Command{
	Use:   "convert DIR -o FILE.gguf",
	Short: "Convert a Hugging Face BitNet b1.58 checkpoint directory to GGUF",
	Long: `Convert a Hugging Face BitNetForCausalLM checkpoint directory (config.json, model.safetensors
or its shards, tokenizer.json, tokenizer_config.json; bf16 latent weights or packed 2-bit weights)
to a GGUF file like the official BitNet b1.58 2B4T GGUF: architecture bitnet-b1.58 (relu2) or
bitnet (silu), Q/K rows in Hugging Face order (NEOX RoPE), tied F16 embedding, F32 norms, the
full tokenizer and the chat template. 1bitLLM's BitnetForCausalLM becomes arch bitnet (sub-norms,
separate output.weight); LlamaForCausalLM with quantization_config.quant_method "bitnet"
(Llama3-8B-1.58, Falcon3-1.58bit, Falcon-E) becomes arch llama with Q/K rows permuted for NORM
RoPE as llama.cpp's converter does and lm_head as an F16 output.weight. Latent weights are
quantized with absmean, one scale per tensor. --type encodes the projections: i2_s (the official file's type), tq2_0 or tq1_0 (the
per-tensor scale rounded to f16 in every 256-weight block; input widths a multiple of 256).
The file is written atomically: on error nothing is left at FILE.`,
	Args: cobra.ExactArgs(1),
	RunE: runConvert,
}

func init() {
	f := convertCmd.Flags()
	f.StringP("output", "o", "", "output GGUF file (required)")
	f.String("type", "i2_s", "projection type: i2_s, tq2_0 or tq1_0")
	_ = convertCmd.MarkFlagRequired("output")
	rootCmd.AddCommand(convertCmd)
}

// runConvert converts args[0] to the --output file.
func runConvert(cmd *cobra.Command, args []string) error {
	f := cmd.Flags()
	name, _ := f.GetString("type")
	typ, err := model.TernaryTypeByName(name)
	if err != nil {
		return fmt.Errorf("--type: %w", err)
	}
	out, _ := f.GetString("output")
	if err := checkOutputFile("--output", out); err != nil {
		return err
	}
	dir := args[0]
	if st, err := os.Stat(dir); err != nil {
		return err
	} else if !st.IsDir() {
		return fmt.Errorf("%s: not a directory (want a Hugging Face checkpoint directory)", dir)
	}
	progress, done := modelProgress(cmd.ErrOrStderr()) // bars on a terminal only
	err = model.ConvertHFProgress(dir, out, typ, progress)
	done()
	if err != nil {
		return err
	}
	m, err := model.Open(out)
	if err != nil {
		return fmt.Errorf("%s: written but does not open: %w", out, err)
	}
	defer m.Close()
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	c := m.Config
	fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s: %d bytes, %s, %d tensors (%s projections), vocab %d, dim %d, %d layers, ctx %d\n",
		out, st.Size(), c.Arch, len(m.Tensors), typ, c.VocabSize, c.Dim, c.Layers, c.ContextLength)
	return nil
}
