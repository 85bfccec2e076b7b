//go:build cgo

package runtime

import (
	"fmt"
	"slices"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
)

// gpuLoRA holds the LoRA adapters of a GPU backend: every term's factors as F16 matrices in
// device memory (A: rank rows of the projection's input width; B: the projection's output rows
// of rank values), the user scales, and the scratch of the three steps each term records —
//
//	f16_matvec  u = A · x          (x: the projection's float input, [T][in] → u [T][r])
//	scale       v = u * s          (s = term.Scaling(scale), a push constant)
//	f16_matvec  y = y + B · v      (accumulate: y the projection's output rows)
//
// which are cpuref.ApplyLoRA's arithmetic bit for bit (f16_matvec is cpuref.Logits' canonical
// dot product; scale is one f32 product; accumulate one f32 sum).
type gpuLoRA struct {
	layers [][7][]gpuLoRATerm // per layer, per projection (model.LoRAProjections order)
	scales cpuref.LoRAScales
	u, v   *gpu.Buffer // [MaxBatch][max rank] f32
	// proj is [MaxBatch][dim] f32: the output of an adapted o or down projection before the
	// residual add (the fused residual accumulate would add the LoRA term after it).
	proj *gpu.Buffer
	rank int
}

// gpuLoRATerm is one term on the device.
type gpuLoRATerm struct {
	cpuref.LoRATerm
	a, b *F16Matrix
}

// newGPULoRA checks the adapters against cfg (cpuref.LoRALayers) and returns their terms, to
// upload after the weights (uploadLoRA); nil without adapters.
func newGPULoRA(cfg model.Config, adapters []cpuref.Adapter) (*gpuLoRA, error) {
	if len(adapters) == 0 {
		return nil, nil
	}
	terms, err := cpuref.LoRALayers(cfg, adapters)
	if err != nil {
		return nil, err
	}
	l := &gpuLoRA{layers: make([][7][]gpuLoRATerm, len(terms)), scales: cpuref.AdapterScales(adapters)}
	for li, layer := range terms {
		for pi, ts := range layer {
			for _, t := range ts {
				l.layers[li][pi] = append(l.layers[li][pi], gpuLoRATerm{LoRATerm: t})
				l.rank = max(l.rank, t.Pair.Rank())
			}
		}
	}
	return l, nil
}

// uploadLoRA uploads the adapters' factors as F16 matrices and allocates their scratch.
func (g *GPU) uploadLoRA() error {
	l := g.lora
	if l == nil {
		return nil
	}
	for li := range l.layers {
		for pi := range l.layers[li] {
			for i := range l.layers[li][pi] {
				t := &l.layers[li][pi][i]
				r := t.Pair.Rank()
				in, out := int(t.Pair.A.Shape[0]), int(t.Pair.B.Shape[1])
				var err error
				if t.a, err = g.uploadF16(t.Pair.A, r, in); err != nil {
					return fmt.Errorf("LoRA adapter %s: %w", t.LoRA.Path, err)
				}
				if t.b, err = g.uploadF16(t.Pair.B, out, r); err != nil {
					return fmt.Errorf("LoRA adapter %s: %w", t.LoRA.Path, err)
				}
			}
		}
	}
	var err error
	if l.u, err = g.dev.NewBuffer(4 * MaxBatch * uint64(l.rank)); err != nil {
		return err
	}
	if l.v, err = g.dev.NewBuffer(4 * MaxBatch * uint64(l.rank)); err != nil {
		return err
	}
	l.proj, err = g.dev.NewBuffer(4 * MaxBatch * uint64(g.cfg.Dim))
	return err
}

// bytes is the device memory the adapters add to the plan: every factor (2 bytes an element),
// the scratch u, v and proj, and the activations only the adapted path uses (k and v when the
// model fuses RoPE into the q/k/v GEMV; up and the f32 inputs for a ternary model).
func (l *gpuLoRA) bytes(cfg model.Config, f16 bool) uint64 {
	if l == nil {
		return 0
	}
	var n uint64
	for _, layer := range l.layers {
		for _, ts := range layer {
			for _, t := range ts {
				r := uint64(t.Pair.Rank())
				n += 2*t.Pair.A.Shape[0]*r + 2*r*t.Pair.B.Shape[1] // as uploaded: rows × cols × 2
			}
		}
	}
	B := uint64(MaxBatch)
	n += 4 * B * (2*uint64(l.rank) + uint64(cfg.Dim))
	if !f16 && RoPEFusable(cfg.HeadDim, cfg.RoPEDim) {
		n += 2 * 4 * B * uint64(cfg.KVHeads*cfg.HeadDim)
	}
	if !f16 {
		n += 4 * B * uint64(cfg.FFNDim)
		n += 4 * B * uint64(max(cfg.Dim, cfg.Heads*cfg.HeadDim, cfg.FFNDim))
	}
	return n
}

// has reports whether layer li has terms on any of the projections (model.LoRAProjections
// indices).
func (l *gpuLoRA) has(li int, projs ...int) bool {
	if l == nil {
		return false
	}
	for _, p := range projs {
		if len(l.layers[li][p]) > 0 {
			return true
		}
	}
	return false
}

// record records the LoRA terms of projection proj of layer li for T tokens: x holds their
// float inputs ([T][in], tokens in apart), y their outputs (token t's rows at yOff + t·yStride).
// Terms whose adapter's scale is 0 record nothing.
func (l *gpuLoRA) record(ks *Kernels, s *gpu.Sequence, T uint32, li, proj int, x gpu.Range, y *gpu.Buffer, yOff, yStride uint32) error {
	for _, t := range l.layers[li][proj] {
		scale := l.scales[t.Adapter]
		if scale == 0 {
			continue
		}
		r := t.a.Rows
		if err := ks.F16MatMul(s, t.a, x, l.u.Whole(), F16Args{T: T, YStride: r}); err != nil {
			return err
		}
		if err := ks.Scale(s, l.u.Whole(), l.v.Whole(), T*r, t.Scaling(scale)); err != nil {
			return err
		}
		if err := ks.F16MatMul(s, t.b, l.v.Whole(), y.Whole(), F16Args{T: T, YOff: yOff, YStride: yStride, Accumulate: true}); err != nil {
			return err
		}
	}
	return nil
}

// release frees the adapters' device memory.
func (l *gpuLoRA) release() {
	if l == nil {
		return
	}
	for _, layer := range l.layers {
		for _, ts := range layer {
			for _, t := range ts {
				for _, m := range []*F16Matrix{t.a, t.b} {
					if m == nil {
						continue
					}
					for _, c := range m.Chunks {
						c.Buf.Buf.Release()
					}
				}
			}
		}
	}
	for _, b := range []*gpu.Buffer{l.u, l.v, l.proj} {
		if b != nil {
			b.Release()
		}
	}
}

// LoRAAdapters is the number of adapters the GPU applies (GPUOptions.LoRA).
func (g *GPU) LoRAAdapters() int {
	if g.lora == nil {
		return 0
	}
	return len(g.lora.scales)
}

// SetLoRAScales sets each adapter's user scale, in load order (0 switches one off). The scales
// are push constants of the recorded steps, so a change re-records them (once per change, not
// per token). It returns an error, changing nothing, for the wrong number of scales or a
// non-finite one.
func (g *GPU) SetLoRAScales(scales []float32) error {
	if err := cpuref.LoRAScales(scales).Check(g.LoRAAdapters()); err != nil {
		return err
	}
	if g.lora == nil || slices.Equal(g.lora.scales, scales) {
		return nil
	}
	old := slices.Clone(g.lora.scales)
	copy(g.lora.scales, scales) // what the steps recorded next read
	if err := g.rerecord(); err != nil {
		copy(g.lora.scales, old) // the recorded steps still hold these
		return err
	}
	return nil
}

// rerecord records the decode step again (and the profiled one), and drops the greedy and
// candidate steps, which the next DecodeGreedy or DecodeCandidates records anew: after a change
// of the LoRA scales, which the recorded steps hold as push constants. It records both new steps
// before it releases anything, so an error leaves every step as it was.
func (g *GPU) rerecord() error {
	seq, err := g.record(1, nil)
	if err != nil {
		return err
	}
	var prof *gpu.Sequence
	if g.profSeq != nil {
		if prof, err = g.record(1, g.profTimer); err != nil {
			seq.Release()
			return err
		}
		g.profSeq.Release()
		g.profSeq = prof
	}
	g.decode.Release()
	g.decode = seq
	if g.greedySeq != nil {
		g.greedySeq.Release()
		g.greedyLogits.Release()
		g.tokenOut.Release()
		g.greedySeq, g.greedyLogits, g.tokenOut = nil, nil, nil
	}
	if g.cand != nil {
		steps := g.cand.steps
		g.cand.release()
		g.cand = nil
		g.candSteps += steps // CandidateSteps keeps counting across the re-recording
	}
	return nil
}
