package model

import (
	"encoding/binary"
	"fmt"
)

// Check verifies that adapter l fits the base model m and binds it to m. Every target must name
// one of m's projections (blk.N with N below m.Config.Layers, a LoRAProjections suffix, a 2-D
// tensor in m.Tensors), A's in (Shape[0] of A [in, r]) must equal the base tensor's input width
// (Shape[0] of its GGUF shape [in, out]) and B's out (Shape[1] of B [r, out]) its output width,
// and a GGUF adapter's architecture must be m's (bitnet-25 and bitnet-b1.58 are one). Errors
// name the adapter file, the adapter's tensor as its file spells it, and expected vs found.
//
// When l is valid for m, Check sets l.Arch to m's architecture if it was empty (a PEFT
// directory), and, when l.HFRows is set and m has NORM RoPE (arch llama, whose Q/K rows the
// converters permute), permutes the rows of B for attn_q (m.Config.Heads heads) and attn_k
// (KVHeads) with PermuteQKNorm, as llama.cpp's convert_lora_to_gguf.py does; HFRows is then
// false. l is not changed when Check returns an error. Check modifies l, so it must not run
// while another goroutine reads l.
func (l *LoRA) Check(m *Model) error {
	file := l.Path
	if l.Arch != "" && canonArch(l.Arch) != canonArch(m.Config.Arch) {
		return fmt.Errorf("%s: the adapter is for architecture %s, the base model %s is %s", file, l.Arch, m.Path, m.Config.Arch)
	}
	if len(l.Targets) == 0 {
		return fmt.Errorf("%s: the adapter has no targets", file)
	}
	permute := l.HFRows && m.Config.RoPEMode == RoPENorm
	newB := map[string]*Tensor{}
	for _, base := range sortedLoRATargets(l.Targets) {
		p := l.Targets[base]
		na, nb := l.srcNames(base)
		layer, proj, ok := ParseLoRATarget(base)
		if !ok {
			return fmt.Errorf("%s: tensor %s adapts %s, which is not one of the projections %s", file, na, base, loraTargetsHelp)
		}
		if err := checkPairLayout(file, base, p); err != nil {
			return err
		}
		if layer >= m.Config.Layers {
			return fmt.Errorf("%s: tensor %s adapts layer %d, but the base model %s has %d layers (0..%d)", file, na, layer, m.Path, m.Config.Layers, m.Config.Layers-1)
		}
		w := m.Tensors[base]
		if w == nil || len(w.Shape) != 2 {
			return fmt.Errorf("%s: tensor %s adapts %s, which the base model %s does not have as a matrix", file, na, base, m.Path)
		}
		if in := p.A.Shape[0]; in != w.Shape[0] {
			return fmt.Errorf("%s: tensor %s (GGUF shape %v) takes %d inputs, but the base model's %s %v takes %d", file, na, p.A.Shape, in, base, w.Shape, w.Shape[0])
		}
		if out := p.B.Shape[1]; out != w.Shape[1] {
			return fmt.Errorf("%s: tensor %s (GGUF shape %v) gives %d outputs, but the base model's %s %v gives %d", file, nb, p.B.Shape, out, base, w.Shape, w.Shape[1])
		}
		heads := 0
		switch proj {
		case "attn_q":
			heads = m.Config.Heads
		case "attn_k":
			heads = m.Config.KVHeads
		}
		if permute && heads > 0 {
			b, err := permuteLoRARows(p.B, heads)
			if err != nil {
				return fmt.Errorf("%s: tensor %s: %v", file, nb, err)
			}
			newB[base] = b
		}
	}
	for base, b := range newB {
		p := l.Targets[base]
		p.B = b
		l.Targets[base] = p
	}
	l.HFRows = false
	if l.Arch == "" {
		l.Arch = m.Config.Arch
	}
	return nil
}

// srcNames returns the names of base's A and B tensors in the adapter file.
func (l *LoRA) srcNames(base string) (string, string) {
	if n, ok := l.src[base]; ok {
		return n[0], n[1]
	}
	return base + loraSuffixA, base + loraSuffixB
}

// canonArch maps the architecture names bitgpu reads as one (ArchBitNet25 is ArchBitNetB158).
func canonArch(a Arch) Arch {
	if a == ArchBitNet25 {
		return ArchBitNetB158
	}
	return a
}

// permuteLoRARows returns a copy of the F16 factor B ([r, out]: out rows of r values) whose
// rows are permuted from Hugging Face order to NORM-RoPE order for heads heads (PermuteQKNorm).
func permuteLoRARows(b *Tensor, heads int) (*Tensor, error) {
	r, out := int(b.Shape[0]), int(b.Shape[1])
	v := make([]uint16, r*out)
	for i := range v {
		v[i] = binary.LittleEndian.Uint16(b.Data[2*i:])
	}
	p, err := PermuteQKNorm(v, out, r, heads)
	if err != nil {
		return nil, err
	}
	data := make([]byte, 2*len(p))
	for i, x := range p {
		binary.LittleEndian.PutUint16(data[2*i:], x)
	}
	return &Tensor{Name: b.Name, Type: b.Type, Shape: append([]uint64(nil), b.Shape...), Data: data}, nil
}
