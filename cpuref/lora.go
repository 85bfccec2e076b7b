package cpuref

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/bitgpu/bitgpu/model"
)

// Adapter is a LoRA applied at a user scale (`--lora FILE:SCALE`; 1 without a scale).
type Adapter struct {
	LoRA  *model.LoRA
	Scale float32
}

// LoRATerm is one adapter's factors on one projection: Pair's A ([in, r] F16, r even, see
// AttachLoRA) and B ([r, out] F16), the pair's rank in the file (Rank: r, or r-1 when padded;
// the scaling's denominator), and the index of its adapter in the list given to AttachLoRA
// (whose scale, set per request, multiplies it).
type LoRATerm struct {
	Adapter int
	LoRA    *model.LoRA
	Pair    model.LoRAPair
	Rank    int
}

// Scaling is the factor the term's B·(A·x) is multiplied by at user scale s
// (model.LoRA.ScalingRank of the file's rank).
func (t LoRATerm) Scaling(s float32) float32 { return t.LoRA.ScalingRank(t.Rank, s) }

// AttachLoRA hangs each adapter's pairs on the projections of w (Projection.LoRA, in adapter
// order) after checking them against cfg: every target must be "blk.N.<projection>.weight" with
// N < Layers and <projection> one of model.LoRAProjections, A must be an F16 [in, r] tensor
// with in the projection's input width, B an F16 [r, out] tensor with out its output width.
// A pair of odd rank is padded to the next even rank with a zero row of A and a zero column of
// B (the dot products below read element pairs): the padded terms add exact zeros, so the sum
// is the unpadded one. Errors name the adapter file, the tensor, and expected versus found.
func AttachLoRA(w *Weights, cfg model.Config, adapters []Adapter) error {
	if len(w.Layers) != cfg.Layers {
		return fmt.Errorf("cpuref: AttachLoRA: %d layers of weights for a config of %d", len(w.Layers), cfg.Layers)
	}
	layers, err := LoRALayers(cfg, adapters)
	if err != nil {
		return err
	}
	for i := range w.Layers {
		for j, p := range w.Layers[i].projections() {
			p.LoRA = layers[i][j]
		}
	}
	return nil
}

// LoRALayers checks the adapters against cfg as AttachLoRA describes and returns, for each
// layer, the terms of its seven projections in model.LoRAProjections order (q, k, v, o, gate,
// up, down), each projection's terms in adapter order. The GPU backend uploads these.
func LoRALayers(cfg model.Config, adapters []Adapter) ([][7][]LoRATerm, error) {
	qDim, kvDim := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
	widths := [7][2]int{{cfg.Dim, qDim}, {cfg.Dim, kvDim}, {cfg.Dim, kvDim}, {qDim, cfg.Dim},
		{cfg.Dim, cfg.FFNDim}, {cfg.Dim, cfg.FFNDim}, {cfg.FFNDim, cfg.Dim}} // in, out
	layers := make([][7][]LoRATerm, cfg.Layers)
	for ai, ad := range adapters {
		l := ad.LoRA
		if l == nil {
			return nil, fmt.Errorf("LoRA adapter %d: nil", ai)
		}
		if math.IsNaN(float64(ad.Scale)) || math.IsInf(float64(ad.Scale), 0) {
			return nil, fmt.Errorf("LoRA adapter %s: scale %v must be finite", l.Path, ad.Scale)
		}
		names := make([]string, 0, len(l.Targets))
		for name := range l.Targets {
			names = append(names, name)
		}
		slices.Sort(names) // the first error is the same every run
		for _, name := range names {
			pair := l.Targets[name]
			layer, proj, ok := parseLoRATarget(name)
			if !ok || layer >= cfg.Layers {
				return nil, fmt.Errorf("LoRA adapter %s: tensor %s does not name a projection of this model (blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}.weight with N < %d)",
					l.Path, name, cfg.Layers)
			}
			in, out := widths[proj][0], widths[proj][1]
			if err := checkLoRAFactor(l.Path, name+" lora_a", pair.A, in, -1); err != nil {
				return nil, err
			}
			r := pair.Rank()
			if err := checkLoRAFactor(l.Path, name+" lora_b", pair.B, r, out); err != nil {
				return nil, err
			}
			if r == 0 {
				return nil, fmt.Errorf("LoRA adapter %s: tensor %s: rank 0", l.Path, name)
			}
			if r%2 != 0 {
				pair = padRank(pair, in, out, r)
			}
			layers[layer][proj] = append(layers[layer][proj], LoRATerm{Adapter: ai, LoRA: l, Pair: pair, Rank: r})
		}
	}
	return layers, nil
}

// checkLoRAFactor checks that t is an F16 matrix of GGUF shape [cols, rows] (rows < 0: any).
func checkLoRAFactor(file, what string, t *model.Tensor, cols, rows int) error {
	switch {
	case t == nil:
		return fmt.Errorf("LoRA adapter %s: %s is missing", file, what)
	case t.Type != model.TypeF16 || len(t.Shape) != 2:
		return fmt.Errorf("LoRA adapter %s: %s is %s %v, want an F16 matrix", file, what, t.Type, t.Shape)
	case t.Shape[0] != uint64(cols) || (rows >= 0 && t.Shape[1] != uint64(rows)):
		want := fmt.Sprintf("[%d, %d]", cols, rows)
		if rows < 0 {
			want = fmt.Sprintf("[%d, r]", cols)
		}
		return fmt.Errorf("LoRA adapter %s: %s has shape %v, want %s", file, what, t.Shape, want)
	case uint64(len(t.Data)) < 2*t.Shape[0]*t.Shape[1]:
		return fmt.Errorf("LoRA adapter %s: %s: shape %v needs %d bytes, found %d", file, what, t.Shape, 2*t.Shape[0]*t.Shape[1], len(t.Data))
	}
	return nil
}

// padRank returns p with one zero row appended to A ([in, r] → [in, r+1]) and one zero column
// to each row of B ([r, out] → [r+1, out]).
func padRank(p model.LoRAPair, in, out, r int) model.LoRAPair {
	a := &model.Tensor{Name: p.A.Name, Type: model.TypeF16, Shape: []uint64{uint64(in), uint64(r + 1)}, Data: make([]byte, 2*in*(r+1))}
	copy(a.Data, p.A.Data[:2*in*r])
	b := &model.Tensor{Name: p.B.Name, Type: model.TypeF16, Shape: []uint64{uint64(r + 1), uint64(out)}, Data: make([]byte, 2*(r+1)*out)}
	for i := range out {
		copy(b.Data[2*i*(r+1):], p.B.Data[2*i*r:2*(i+1)*r])
	}
	return model.LoRAPair{A: a, B: b}
}

// parseLoRATarget splits "blk.N.<projection>.weight" into N and the projection's index in
// model.LoRAProjections (the order LayerWeights.projections returns).
func parseLoRATarget(name string) (layer, proj int, ok bool) {
	rest, found := strings.CutPrefix(name, "blk.")
	if !found {
		return 0, 0, false
	}
	num, rest, found := strings.Cut(rest, ".")
	if !found {
		return 0, 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || strconv.Itoa(n) != num {
		return 0, 0, false
	}
	suffix, found := strings.CutSuffix(rest, ".weight")
	if !found {
		return 0, 0, false
	}
	for i, p := range model.LoRAProjections {
		if p.GGUF == suffix {
			return n, i, true
		}
	}
	return 0, 0, false
}

// projections returns the layer's seven projections in model.LoRAProjections order (q, k, v,
// o, gate, up, down).
func (l *LayerWeights) projections() [7]*Projection {
	return [7]*Projection{&l.Q, &l.K, &l.V, &l.O, &l.Gate, &l.Up, &l.Down}
}

// LoRAScales are the per-adapter user scales of a backend, in AttachLoRA's adapter order; a
// scale of 0 switches its adapter off (its terms are skipped, so the output is the base's bits).
type LoRAScales []float32

// Check reports an error when s does not give one finite scale per adapter of n.
func (s LoRAScales) Check(n int) error {
	if len(s) != n {
		return fmt.Errorf("%d LoRA scales for %d adapters", len(s), n)
	}
	for i, v := range s {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("LoRA adapter %d: scale %v must be finite", i, v)
		}
	}
	return nil
}

// ApplyLoRA adds, for each of n tokens, the LoRA terms of one projection to its output
// (dst [n][rows], the BitLinear's result after its extra scale) from the projection's float
// input x ([n][cols]: the normed rows before the int8 quantization), in term order:
//
//	u       = A · x_t                  (Logits' canonical 32-lane dot per row of A, r values)
//	u_j     = u_j * s                  (s = term.Scaling(scales[term.Adapter]), one f32 product)
//	d       = B · u                    (the same dot per row of B, rows values)
//	dst_t_i = dst_t_i + d_i            (one f32 sum, as Add)
//
// A term whose scale is 0 is skipped. u and d are scratch of at least r and rows floats. The
// GPU computes the same bits with f16_matvec, scale and f16_matvec's accumulate. Errors name the
// tensor.
func ApplyLoRA(dst, x []float32, n int, terms []LoRATerm, scales LoRAScales, u, d []float32) error {
	if len(terms) == 0 || n <= 0 {
		return nil
	}
	rows, cols := len(dst)/n, len(x)/n
	for _, tm := range terms {
		if tm.Adapter >= len(scales) || scales[tm.Adapter] == 0 {
			continue
		}
		s := tm.Scaling(scales[tm.Adapter])
		r := tm.Pair.Rank()
		if len(u) < r || len(d) < rows {
			return fmt.Errorf("cpuref: ApplyLoRA: scratch of %d and %d floats, need %d and %d", len(u), len(d), r, rows)
		}
		for t := range n {
			if err := Logits(u[:r], x[t*cols:(t+1)*cols], tm.Pair.A); err != nil {
				return err
			}
			for j := range u[:r] {
				u[j] *= s
			}
			if err := Logits(d[:rows], u[:r], tm.Pair.B); err != nil {
				return err
			}
			out := dst[t*rows : (t+1)*rows]
			for i := range out {
				out[i] += d[i]
			}
		}
	}
	return nil
}

// MaxLoRARank is the largest (even-padded) rank among the terms of w's projections, the size of
// ApplyLoRA's u scratch; 0 without adapters.
func MaxLoRARank(w *Weights) int {
	r := 0
	for i := range w.Layers {
		for _, p := range w.Layers[i].projections() {
			for _, t := range p.LoRA {
				r = max(r, t.Pair.Rank())
			}
		}
	}
	return r
}

// AdapterScales returns the adapters' scales in order (nil for none).
func AdapterScales(adapters []Adapter) LoRAScales {
	if len(adapters) == 0 {
		return nil
	}
	s := make(LoRAScales, len(adapters))
	for i, a := range adapters {
		s[i] = a.Scale
	}
	return s
}

// SetLoRAScales sets the user scale of each adapter New was given (WithLoRA), in order; 0 turns
// one off. It returns an error, changing nothing, when scales has the wrong length or a
// non-finite value.
func (b *Backend) SetLoRAScales(scales []float32) error {
	if err := LoRAScales(scales).Check(len(b.lora)); err != nil {
		return fmt.Errorf("cpuref: %w", err)
	}
	copy(b.lora, scales)
	return nil
}

// LoRAAdapters is the number of adapters New was given (WithLoRA).
func (b *Backend) LoRAAdapters() int { return len(b.lora) }
