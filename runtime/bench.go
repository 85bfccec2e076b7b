//go:build cgo

package runtime

import (
	"fmt"
	"math/rand/v2"
	"sort"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
)

// Shape is a matrix shape for the kernel benchmarks: Rows outputs by Cols inputs.
type Shape struct{ Rows, Cols int }

// String is "ROWSxCOLS".
func (s Shape) String() string { return fmt.Sprintf("%dx%d", s.Rows, s.Cols) }

// Shapes2B4T are the BitLinear shapes of BitNet b1.58 2B4T (hidden 2560, KV width 640, FFN 6912):
// q/o, k/v, gate/up, down.
var Shapes2B4T = []Shape{{2560, 2560}, {640, 2560}, {6912, 2560}, {2560, 6912}}

// KernelResult is one benchmarked kernel: GPU time from timestamp queries over the repeats (median
// and the spread min..max, nanoseconds), the bytes it must move, and what that makes per second.
type KernelResult struct {
	Kernel   string  `json:"kernel"`
	Variant  string  `json:"variant"`
	Shape    string  `json:"shape"`
	MedianNS float64 `json:"median_ns"`
	MinNS    float64 `json:"min_ns"`
	MaxNS    float64 `json:"max_ns"`
	Bytes    uint64  `json:"bytes"`
	Ops      uint64  `json:"ops"` // multiply-adds ×2 (or additions for ternary)
	GBps     float64 `json:"gb_per_s"`
	GOPs     float64 `json:"gop_per_s"`
	// RooflineRatio is GBps divided by the copy kernel's GB/s measured in the same run.
	RooflineRatio float64 `json:"roofline_ratio"`
}

// BenchOptions configure BenchKernels.
type BenchOptions struct {
	Shapes    []Shape
	Repeats   int    // timed runs per kernel (median reported)
	Warmup    int    // untimed runs first
	CopyBytes uint64 // size of the copy kernel's buffers (0: 64 MiB)
}

// BenchKernels measures the copy kernel (the device's achievable bandwidth) and, for every shape,
// the ternary GEMV (one token, 2-bit weights) and the F16 GEMV (the full-precision baseline) with
// timestamp queries, and reports each kernel's bandwidth as a ratio to the copy bandwidth from the
// same run. It returns an error when the device has no timestamps or memory runs out.
func BenchKernels(dev *gpu.Device, opts BenchOptions) ([]KernelResult, error) {
	if opts.Repeats <= 0 {
		opts.Repeats = 20
	}
	if opts.Warmup < 0 {
		opts.Warmup = 0
	}
	if opts.CopyBytes == 0 {
		opts.CopyBytes = 64 << 20
	}
	ks, err := NewKernels(dev)
	if err != nil {
		return nil, err
	}
	defer ks.Release()
	var res []KernelResult
	var keep []*gpu.Buffer
	defer func() {
		for _, b := range keep {
			b.Release()
		}
	}()
	newBuf := func(bytes uint64) (*gpu.Buffer, error) {
		b, err := dev.NewBuffer(bytes)
		if err == nil {
			keep = append(keep, b)
		}
		return b, err
	}

	words := uint32(opts.CopyBytes / 4)
	src, err := newBuf(opts.CopyBytes)
	if err != nil {
		return nil, err
	}
	dst, err := newBuf(opts.CopyBytes)
	if err != nil {
		return nil, err
	}
	r, err := timeKernel(dev, opts, func(s *gpu.Sequence) error { return ks.Copy(s, src.Whole(), dst.Whole(), words) })
	if err != nil {
		return nil, fmt.Errorf("copy: %w", err)
	}
	r.Kernel, r.Variant, r.Shape, r.Bytes = "copy", ks.Variant("copy"), fmtBytesShort(opts.CopyBytes), 2*opts.CopyBytes
	res = append(res, r)

	rng := rand.New(rand.NewPCG(1, 1))
	for _, sh := range opts.Shapes {
		if sh.Cols%16 != 0 {
			return nil, fmt.Errorf("--shape %s: columns must be a multiple of 16", sh)
		}
		// Ternary GEMV.
		wWords := make([]uint32, sh.Rows*sh.Cols/16)
		for i := range wWords {
			wWords[i] = randCodes(rng)
		}
		wb, err := newBuf(uint64(4 * len(wWords)))
		if err != nil {
			return nil, err
		}
		if err := gpu.Write(wb, 0, wWords); err != nil {
			return nil, err
		}
		w := &TernaryWeights{Name: sh.String(), Rows: uint32(sh.Rows), Cols: uint32(sh.Cols), Scale: 0.01, Buf: wb.Whole()}
		act, err := newBuf(uint64(sh.Cols))
		if err != nil {
			return nil, err
		}
		sq, err := newBuf(8)
		if err != nil {
			return nil, err
		}
		if err := gpu.Write(sq, 0, []float32{1, 0}); err != nil {
			return nil, err
		}
		y, err := newBuf(uint64(4 * max(sh.Rows, sh.Cols)))
		if err != nil {
			return nil, err
		}
		// gemv times one ternary GEMV form of the shape: w's layout, reported as kernel.
		gemv := func(kernel string, w *TernaryWeights) error {
			r, err := timeKernel(dev, opts, func(s *gpu.Sequence) error {
				return ks.TernaryMatMul(s, w, act.Whole(), sq.Whole(), y.Whole(), MatMulArgs{T: 1, YStride: w.Rows})
			})
			if err != nil {
				return fmt.Errorf("%s %s: %w", kernel, sh, err)
			}
			r.Kernel, r.Variant, r.Shape = kernel, ks.Variant("ternary_gemv"), sh.String()
			r.Bytes = w.Bytes() + uint64(sh.Cols+4*sh.Rows)
			r.Ops = uint64(2 * sh.Rows * sh.Cols)
			res = append(res, r)
			return nil
		}
		if err := gemv("ternary_gemv", w); err != nil {
			return nil, err
		}
		// The same GEMV read with 128-bit loads (TernaryWeights.WideLoads; Cols a multiple of 64).
		if sh.Cols%64 == 0 {
			ww := *w
			ww.WideLoads = true
			if err := gemv("ternary_gemv_wide", &ww); err != nil {
				return nil, err
			}
		}
		// The same GEMV on the same trits in the base-3 layout (PackingBase3; whole 256-blocks).
		if base3Fits(sh.Cols) {
			w3 := *w
			b3Words, err := PackTernaryBase3(wWords, &w3)
			if err != nil {
				return nil, err
			}
			b3, err := newBuf(uint64(4 * len(b3Words)))
			if err != nil {
				return nil, err
			}
			if err := gpu.Write(b3, 0, b3Words); err != nil {
				return nil, err
			}
			w3.Buf = b3.Whole()
			if err := gemv("ternary_gemv_base3", &w3); err != nil {
				return nil, err
			}
		}

		// F16 GEMV on the same shape.
		eb, err := newBuf(uint64(2 * sh.Rows * sh.Cols))
		if err != nil {
			return nil, err
		}
		half := make([]uint16, sh.Rows*sh.Cols)
		for i := range half {
			half[i] = model.F32ToF16(float32(rng.NormFloat64()) * 0.02)
		}
		if err := gpu.Write(eb, 0, half); err != nil {
			return nil, err
		}
		xb, err := newBuf(uint64(4 * sh.Cols))
		if err != nil {
			return nil, err
		}
		mat := &F16Matrix{Name: sh.String(), Rows: uint32(sh.Rows), Cols: uint32(sh.Cols), Chunks: []F16Chunk{{Rows: uint32(sh.Rows), Buf: eb.Whole()}}}
		r, err = timeKernel(dev, opts, func(s *gpu.Sequence) error {
			return ks.F16MatMul(s, mat, xb.Whole(), y.Whole(), F16Args{T: 1, YStride: uint32(sh.Rows)})
		})
		if err != nil {
			return nil, fmt.Errorf("f16 gemv %s: %w", sh, err)
		}
		r.Kernel, r.Variant, r.Shape = "f16_gemv", ks.Variant("f16_gemv"), sh.String()
		r.Bytes = uint64(2*sh.Rows*sh.Cols + 4*sh.Cols + 4*sh.Rows)
		r.Ops = uint64(2 * sh.Rows * sh.Cols)
		res = append(res, r)
	}
	copyGBps := 0.0
	for i := range res {
		res[i].GBps = float64(res[i].Bytes) / res[i].MedianNS
		res[i].GOPs = float64(res[i].Ops) / res[i].MedianNS
		if res[i].Kernel == "copy" {
			copyGBps = res[i].GBps
		}
	}
	for i := range res {
		res[i].RooflineRatio = res[i].GBps / copyGBps
	}
	return res, nil
}

// randCodes is a word of 16 random ternary codes in the GPU layout.
func randCodes(rng *rand.Rand) uint32 {
	var w uint32
	for i := 0; i < 16; i++ {
		w |= uint32(rng.IntN(3)) << (2 * i)
	}
	return w
}

// timeKernel records warmup+repeats runs of rec, each between two timestamps, in one sequence
// (consecutive runs write the same output, so the sequence's barriers serialize them) and returns
// the median, min and max of the timed runs.
func timeKernel(dev *gpu.Device, opts BenchOptions, rec func(s *gpu.Sequence) error) (KernelResult, error) {
	n := opts.Warmup + opts.Repeats
	t, err := dev.NewTimer(n + 1)
	if err != nil {
		return KernelResult{}, err
	}
	defer t.Release()
	err = dev.Run(func(s *gpu.Sequence) error {
		if err := s.Mark(t, "start"); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if err := rec(s); err != nil {
				return err
			}
			if err := s.Mark(t, fmt.Sprint(i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return KernelResult{}, err
	}
	spans, err := t.Spans()
	if err != nil {
		return KernelResult{}, err
	}
	ns := make([]float64, 0, opts.Repeats)
	for _, sp := range spans[opts.Warmup:] {
		ns = append(ns, sp.NS)
	}
	sort.Float64s(ns)
	med := ns[len(ns)/2]
	if len(ns)%2 == 0 {
		med = (ns[len(ns)/2-1] + ns[len(ns)/2]) / 2
	}
	return KernelResult{MedianNS: med, MinNS: ns[0], MaxNS: ns[len(ns)-1]}, nil
}

func fmtBytesShort(b uint64) string {
	if b >= 1<<20 {
		return fmt.Sprintf("%dMiB", b>>20)
	}
	return fmt.Sprintf("%dKiB", b>>10)
}
