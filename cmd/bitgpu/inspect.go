package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/model"
)

// inspectCmd is `bitgpu inspect FILE`: the architecture, hyper-parameters, tokenizer summary and
// tensor table (name, type, GGUF shape, bytes) of a GGUF file or Hugging Face checkpoint directory.
var inspectCmd = &cobra.Command{
	Use:   "inspect [FILE]",
	Short: "Show a model's architecture, hyper-parameters, tokenizer and tensors",
	Long: `Show a model's architecture, hyper-parameters, tokenizer summary and tensor table
(type, shape in GGUF order with the innermost dimension first, bytes). FILE is a GGUF file or a
Hugging Face checkpoint directory; without FILE, the built-in model. A GGUF file whose tensors do
not match its hyper-parameters is still listed, then reported as an error.`,
	Args: cobra.MaximumNArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			noteBuiltin()
			g, err := model.ParseGGUF(assets.Name+".gguf", assets.GGUF())
			if err != nil {
				return err
			}
			return inspectGGUF(cmd.OutOrStdout(), g)
		}
		return runInspect(cmd.OutOrStdout(), args[0])
	},
}

func init() { rootCmd.AddCommand(inspectCmd) }

// runInspect prints the report for path to w.
func runInspect(w io.Writer, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if isPEFTDir(path, st.IsDir()) {
		return inspectPEFT(w, path)
	}
	if st.IsDir() || strings.HasSuffix(path, ".safetensors") {
		m, err := model.Open(path)
		if err != nil {
			return err
		}
		defer m.Close()
		fmt.Fprintf(w, "file:        %s\nformat:      Hugging Face safetensors (converted at load)\n", printable(path))
		printConfig(w, &m.Config)
		if m.PackedScaleRule != "" {
			fmt.Fprintf(w, "packed:      %s\n", m.PackedScaleRule)
		}
		printTokenizer(w, m.Tokenizer, "", 0, &m.Config)
		ts := make([]*model.Tensor, 0, len(m.Tensors))
		for _, s := range m.Config.TensorSpecs() {
			ts = append(ts, m.Tensors[s.Name])
		}
		return printTensors(w, ts)
	}

	g, err := model.OpenGGUF(path)
	if err != nil {
		return err
	}
	defer g.Close()
	return inspectGGUF(w, g)
}

// inspectGGUF prints the report for a parsed GGUF file (g.Path names it).
func inspectGGUF(w io.Writer, g *model.GGUF) error {
	path := g.Path
	if t, _ := g.Meta[model.KeyGeneralType].(string); t == "adapter" {
		return inspectAdapterGGUF(w, g)
	}
	fmt.Fprintf(w, "file:        %s\nformat:      GGUF v%d, %d metadata keys, %d tensors, alignment %d, data at byte %d\n",
		printable(path), g.Version, len(g.Keys), len(g.Tensors), g.Alignment, g.DataOffset)
	if name, ok := g.Meta["general.name"].(string); ok {
		fmt.Fprintf(w, "name:        %s\n", printable(name))
	}
	cfg, cfgErr := model.ConfigFromGGUF(g.Meta, g.TensorMap())
	if cfgErr == nil {
		printConfig(w, &cfg)
	} else if arch, ok := g.Meta["general.architecture"].(string); ok {
		fmt.Fprintf(w, "arch:        %s\n", printable(arch))
	}
	tok, tokErr := model.NewTokenizerFromGGUF(g.Meta)
	if tokErr == nil {
		pre, _ := g.Meta[model.KeyTokenizerPre].(string)
		merges, _ := g.Meta[model.KeyTokenizerMerges].([]string)
		tmpl, _ := g.Meta[model.KeyChatTemplate].(string)
		c := cfg
		c.ChatTemplate = tmpl
		printTokenizer(w, tok, fmt.Sprint(g.Meta[model.KeyTokenizerModel], " (pre ", pre, ")"), len(merges), &c)
	}
	if err := printTensors(w, g.Tensors); err != nil {
		return err
	}
	printI2SLayoutNote(w, g.Tensors)
	if cfgErr != nil {
		return fmt.Errorf("%s: %w", path, cfgErr)
	}
	if tokErr != nil {
		return fmt.Errorf("%s: %w", path, tokErr)
	}
	return nil
}

// printConfig prints the hyper-parameters.
func printConfig(w io.Writer, c *model.Config) {
	rope := "neox"
	if c.RoPEMode == model.RoPENorm {
		rope = "norm"
	}
	fmt.Fprintf(w, "arch:        %s\n", printable(string(c.Arch)))
	fmt.Fprintf(w, "vocab:       %d\n", c.VocabSize)
	fmt.Fprintf(w, "dim:         %d\n", c.Dim)
	fmt.Fprintf(w, "layers:      %d\n", c.Layers)
	fmt.Fprintf(w, "heads:       %d (kv heads %d, head dim %d)\n", c.Heads, c.KVHeads, c.HeadDim)
	fmt.Fprintf(w, "ffn:         %d\n", c.FFNDim)
	fmt.Fprintf(w, "context:     %d\n", c.ContextLength)
	fmt.Fprintf(w, "rope:        %s, base %g, dim %d\n", rope, c.RoPEBase, c.RoPEDim)
	fmt.Fprintf(w, "rms eps:     %g\n", c.RMSEps)
	fmt.Fprintf(w, "activation:  %s\n", c.Act)
	fmt.Fprintf(w, "sub-norms:   %v\n", c.SubNorms)
	fmt.Fprintf(w, "tied embd:   %v\n", c.TiedEmbedding)
}

// printTokenizer prints the tokenizer summary; kind and merges describe it when known.
func printTokenizer(w io.Writer, tok model.Tokenizer, kind string, merges int, c *model.Config) {
	if kind == "" {
		kind = fmt.Sprintf("%T", tok)
	}
	fmt.Fprintf(w, "tokenizer:   %s, %d tokens", printable(kind), tok.VocabSize())
	if merges > 0 {
		fmt.Fprintf(w, ", %d merges", merges)
	}
	fmt.Fprintln(w)
	for _, s := range []struct {
		name string
		id   int
	}{{"bos", tok.BOS()}, {"eos", tok.EOS()}, {"eot", tok.EOT()}} {
		if s.id >= 0 {
			fmt.Fprintf(w, "%-12s %d %q\n", s.name+":", s.id, tok.TokenBytes(s.id))
		} else {
			fmt.Fprintf(w, "%-12s none\n", s.name+":")
		}
	}
	fmt.Fprintf(w, "add bos:     %v\n", tok.AddBOS())
	if c.ChatTemplate != "" {
		fmt.Fprintf(w, "chat:        %s layout (%d-byte template)\n", model.DetectChatFormat(c.ChatTemplate), len(c.ChatTemplate))
	} else {
		fmt.Fprintf(w, "chat:        no template\n")
	}
}

// printTensors prints the tensor table and the total size.
func printTensors(w io.Writer, ts []*model.Tensor) error {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "tensor\ttype\tshape\tbytes")
	var total uint64
	for _, t := range ts {
		dims := make([]string, len(t.Shape))
		for i, d := range t.Shape {
			dims[i] = fmt.Sprint(d)
		}
		fmt.Fprintf(tw, "%s\t%s\t[%s]\t%d\n", printable(t.Name), t.Type, strings.Join(dims, " "), len(t.Data))
		total += uint64(len(t.Data))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d tensors, %d bytes (%.1f MiB)\n", len(ts), total, float64(total)/(1<<20))
	return nil
}
