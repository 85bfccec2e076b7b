package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/model"
)

// convertLoRACmd is `bitgpu convert-lora PEFT_DIR -o FILE.gguf [-m BASE] [--arch ARCH]`: a PEFT
// LoRA directory to a llama.cpp GGUF adapter (model.OpenLoRA, model.WriteLoRAGGUF).
var convertLoRACmd = &cobra.Command{
	Use:   "convert-lora PEFT_DIR -o FILE.gguf",
	Short: "Convert a PEFT LoRA adapter directory to a GGUF adapter",
	Long: `Convert a PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors with
F32, F16 or BF16 factors) to the GGUF adapter format llama.cpp reads (general.type "adapter",
adapter.type "lora", adapter.lora.alpha, tensors <base tensor>.lora_a and .lora_b as F16, values
rounded to nearest even). Adapters may target the seven projections q/k/v/o_proj and
gate/up/down_proj; DoRA, fan_in_fan_out, trained biases, modules_to_save, per-projection alphas
and embedding or lm_head targets are refused naming the field or tensor.

With -m BASE (a GGUF file or Hugging Face directory) every target is checked against the base
model's projections and shapes before anything is written, the file gets the base's
architecture, and Q/K factors are permuted for a llama-architecture base as llama.cpp's
converter does. Without -m the architecture is --arch (default bitnet-b1.58). An RSLoRA adapter
is written with adapter.lora.alpha = lora_alpha·sqrt(r), which gives llama.cpp PEFT's scaling.
The file is written atomically: on error nothing is left at FILE.`,
	Args: cobra.ExactArgs(1),
	RunE: runConvertLoRA,
}

func init() {
	f := convertLoRACmd.Flags()
	f.StringP("output", "o", "", "output GGUF adapter file (required)")
	f.StringP("model", "m", "", "base model (GGUF file or Hugging Face directory) to check the adapter against")
	f.String("arch", "", "base architecture written to general.architecture: bitnet-b1.58, bitnet-25, bitnet or llama (default: the base's with -m, else bitnet-b1.58)")
	_ = convertLoRACmd.MarkFlagRequired("output")
	rootCmd.AddCommand(convertLoRACmd)
}

// loraArchs are the architectures --arch accepts (the ones bitgpu runs, model.ConfigFromGGUF).
var loraArchs = []model.Arch{model.ArchBitNetB158, model.ArchBitNet25, model.ArchBitNet, model.ArchLlama}

// runConvertLoRA converts args[0] to the --output file.
func runConvertLoRA(cmd *cobra.Command, args []string) error {
	f := cmd.Flags()
	out, _ := f.GetString("output")
	if err := checkOutputFile("--output", out); err != nil {
		return err
	}
	arch, _ := f.GetString("arch")
	if arch != "" {
		ok := false
		for _, a := range loraArchs {
			ok = ok || string(a) == arch
		}
		if !ok {
			return fmt.Errorf("--arch: architecture %q: want bitnet-b1.58, bitnet-25, bitnet or llama", arch)
		}
	}
	basePath, _ := f.GetString("model")
	dir := args[0]
	if st, err := os.Stat(dir); err != nil {
		return err
	} else if !st.IsDir() {
		return fmt.Errorf("%s: not a directory (want a PEFT adapter directory with adapter_config.json and adapter_model.safetensors)", dir)
	}
	l, err := model.OpenLoRA(dir)
	if err != nil {
		return err
	}
	if basePath != "" {
		m, err := model.Open(basePath)
		if err != nil {
			if !strings.Contains(err.Error(), basePath) {
				err = fmt.Errorf("%s: %w", basePath, err)
			}
			return err
		}
		defer m.Close()
		if err := l.Check(m); err != nil {
			return err
		}
		// A GGUF base keeps its own spelling (microsoft/BitNet's bitnet-25 reads as bitnet-b1.58).
		if raw := rawArch(basePath); raw != "" && sameArch(raw, l.Arch) {
			l.Arch = raw
		}
		if arch != "" && !sameArch(model.Arch(arch), l.Arch) {
			return fmt.Errorf("--arch %s: the base model %s is %s", arch, basePath, l.Arch)
		}
	} else {
		if arch == "" {
			arch = string(model.ArchBitNetB158)
		}
		l.Arch = model.Arch(arch)
		if l.Arch == model.ArchLlama {
			for name := range l.Targets {
				if _, proj, _ := model.ParseLoRATarget(name); proj == "attn_q" || proj == "attn_k" {
					return fmt.Errorf("--arch llama: %s needs its rows permuted per head for the base's NORM RoPE: give the base model with -m", name)
				}
			}
		}
	}
	if arch != "" {
		l.Arch = model.Arch(arch)
	}
	if err := model.WriteLoRAGGUF(out, l); err != nil {
		return err
	}
	back, err := model.OpenLoRA(out)
	if err != nil {
		return fmt.Errorf("%s: written but does not open: %w", out, err)
	}
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	checked := "not checked against a base model"
	if basePath != "" {
		checked = "checked against " + printable(basePath)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s: %d bytes, %s, %d targets, rank %s, alpha %g%s, %s\n",
		printable(out), st.Size(), printable(string(back.Arch)), len(back.Targets), loraRanks(back), back.Alpha, rsloraNote(back), checked)
	return nil
}

// rawArch returns general.architecture of the GGUF file at path as written, or "" when path is
// not a readable GGUF file (a Hugging Face directory).
func rawArch(path string) model.Arch {
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		return ""
	}
	g, err := model.OpenGGUF(path)
	if err != nil {
		return ""
	}
	defer g.Close()
	s, _ := g.Meta["general.architecture"].(string)
	return model.Arch(s)
}

// sameArch reports whether bitgpu reads a and b as one architecture.
func sameArch(a, b model.Arch) bool {
	canon := func(x model.Arch) model.Arch {
		if x == model.ArchBitNet25 {
			return model.ArchBitNetB158
		}
		return x
	}
	return canon(a) == canon(b)
}

// loraRanks describes the ranks of l's pairs: "8", or "4..16" when they differ.
func loraRanks(l *model.LoRA) string {
	lo, hi := 0, 0
	for _, p := range l.Targets {
		r := p.Rank()
		if lo == 0 || r < lo {
			lo = r
		}
		hi = max(hi, r)
	}
	if lo == hi {
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d..%d", lo, hi)
}

// rsloraNote is ", rslora" for an RSLoRA adapter (scaling alpha/sqrt(rank)).
func rsloraNote(l *model.LoRA) string {
	if l.RSLoRA {
		return " (rslora: alpha/sqrt(rank))"
	}
	return ""
}

// printLoRA prints an adapter's facts for `bitgpu inspect`: format, name, architecture, alpha
// and scaling rule, ranks, and the targets grouped by projection with their layers.
func printLoRA(w io.Writer, l *model.LoRA, format string) {
	fmt.Fprintf(w, "file:        %s\nformat:      %s\n", printable(l.Path), format)
	if l.Name != "" {
		fmt.Fprintf(w, "name:        %s\n", printable(l.Name))
	}
	if l.Arch != "" {
		fmt.Fprintf(w, "arch:        %s\n", printable(string(l.Arch)))
	} else {
		fmt.Fprintf(w, "arch:        (the base model's)\n")
	}
	rule := "alpha/rank"
	if l.RSLoRA {
		rule = "alpha/sqrt(rank), rslora"
	}
	if l.Alpha == 0 && !l.RSLoRA {
		fmt.Fprintf(w, "alpha:       0 (the rank: scaling 1)\n")
	} else {
		fmt.Fprintf(w, "alpha:       %g (scaling %s)\n", l.Alpha, rule)
	}
	fmt.Fprintf(w, "rank:        %s\n", loraRanks(l))
	layers := map[string][]int{}
	for name := range l.Targets {
		layer, proj, _ := model.ParseLoRATarget(name)
		layers[proj] = append(layers[proj], layer)
	}
	fmt.Fprintf(w, "targets:     %d\n", len(l.Targets))
	for _, p := range model.LoRAProjections {
		ls := layers[p.GGUF]
		if len(ls) == 0 {
			continue
		}
		sort.Ints(ls)
		fmt.Fprintf(w, "  %-12s (%s) layers %s\n", p.GGUF, p.HF, layerRanges(ls))
	}
}

// layerRanges writes sorted layer numbers as ranges: "0-3, 5".
func layerRanges(ls []int) string {
	var parts []string
	for i := 0; i < len(ls); {
		j := i
		for j+1 < len(ls) && ls[j+1] == ls[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, fmt.Sprint(ls[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ls[i], ls[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// isPEFTDir reports whether path is a PEFT adapter directory (it holds adapter_config.json) or
// that directory's adapter_config.json or adapter_model.safetensors.
func isPEFTDir(path string, isDir bool) bool {
	if !isDir {
		b := filepath.Base(path)
		return b == "adapter_config.json" || b == "adapter_model.safetensors"
	}
	_, err := os.Stat(filepath.Join(path, "adapter_config.json"))
	return err == nil
}

// inspectPEFT prints the adapter facts and factor table of a PEFT directory (`bitgpu inspect`).
func inspectPEFT(w io.Writer, path string) error {
	l, err := model.OpenLoRA(path)
	if err != nil {
		return err
	}
	printLoRA(w, l, "PEFT LoRA adapter (factors converted to F16 at load)")
	return printTensors(w, loraFactors(l))
}

// inspectAdapterGGUF prints the facts and tensor table of a GGUF adapter (general.type
// "adapter"); an adapter bitgpu cannot read still has its tensors listed, then the error.
func inspectAdapterGGUF(w io.Writer, g *model.GGUF) error {
	l, err := model.LoRAFromGGUF(g)
	if err == nil {
		printLoRA(w, l, fmt.Sprintf("GGUF v%d LoRA adapter (llama.cpp), %d metadata keys, %d tensors", g.Version, len(g.Keys), len(g.Tensors)))
	} else {
		fmt.Fprintf(w, "file:        %s\nformat:      GGUF v%d adapter, %d metadata keys, %d tensors\n", printable(g.Path), g.Version, len(g.Keys), len(g.Tensors))
	}
	if perr := printTensors(w, g.Tensors); perr != nil {
		return perr
	}
	return err
}

// loraFactors lists l's factors, A then B per target, in the base model's order.
func loraFactors(l *model.LoRA) []*model.Tensor {
	names := make([]string, 0, len(l.Targets))
	for n := range l.Targets {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		li, pi, _ := model.ParseLoRATarget(names[i])
		lj, pj, _ := model.ParseLoRATarget(names[j])
		if li != lj {
			return li < lj
		}
		return projIndex(pi) < projIndex(pj)
	})
	var ts []*model.Tensor
	for _, n := range names {
		ts = append(ts, l.Targets[n].A, l.Targets[n].B)
	}
	return ts
}

// projIndex is proj's index in model.LoRAProjections.
func projIndex(proj string) int {
	for i, p := range model.LoRAProjections {
		if p.GGUF == proj {
			return i
		}
	}
	return len(model.LoRAProjections)
}
