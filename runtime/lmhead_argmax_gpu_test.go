//go:build cgo

package runtime

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/model"
)

// argmaxWant is cpuref.Argmax of x as the device writes it: 0xffffffff for "none".
func argmaxWant(x []float32) uint32 {
	if i := cpuref.Argmax(x); i >= 0 {
		return uint32(i)
	}
	return 0xffffffff
}

// f16NaN is an f16 quiet NaN's bits.
const f16NaN = 0x7e00

// headCase is an LM-head matrix crafted for the argmax: rows x cols F16 weights f (row-major,
// small random values) where row top holds c·sign(q) for the token's int8 activations (or f32
// input) sign — far the largest logit — and the rows of dups are copies of it (ties, in other
// workgroups and chunks and one in the same workgroup); nan lists rows whose logits are NaN.
type headCase struct {
	name       string
	rows, cols int
	top        int
	dups       []int
	nanRows    []int
	allNaN     bool
	zero       bool // every weight 0: every logit +0, a tie over all rows
}

// headCases are the crafted heads of the fused-argmax tests: 301 rows in chunks (of 50 for the F16
// head, whose workgroups take 8 rows: the boundaries 48/50 fall inside chunks; of 200 for the q8
// GEMV, whose workgroups take 128, 8 row groups of 16 rows in turn), the top row tied with rows
// of the same row group in a later turn (85), of later workgroups and chunks, NaN on the top row
// (the next tie wins), the top row alone in the last workgroup, every row NaN, every row zero.
var headCases = []headCase{
	{name: "random", rows: 301, cols: 256, top: -1},
	{name: "ties", rows: 301, cols: 256, top: 77, dups: []int{300, 78, 203, 149, 85}},
	{name: "ties-nan", rows: 301, cols: 96, top: 77, dups: []int{300, 203, 149, 85}, nanRows: []int{77, 0, 5}},
	{name: "first-last", rows: 301, cols: 96, top: 0, dups: []int{300}},
	{name: "last", rows: 301, cols: 96, top: 300}, // the last chunk's last workgroup, one row
	{name: "all-nan", rows: 37, cols: 96, top: 3, allNaN: true},
	{name: "zero", rows: 129, cols: 64, top: -1, zero: true},
}

// nans lists the rows whose logits c makes NaN: every row when allNaN, else nanRows.
func (c headCase) nans() []int {
	if !c.allNaN {
		return c.nanRows
	}
	rows := make([]int, c.rows)
	for r := range rows {
		rows[r] = r
	}
	return rows
}

// headWeights returns c's F16 weights, with the top row aligned to sign.
func headWeights(rng *rand.Rand, c headCase, sign []float32) []float32 {
	f := make([]float32, c.rows*c.cols)
	if c.zero {
		return f
	}
	for i := range f {
		f[i] = float32(rng.NormFloat64() * 0.05)
	}
	if c.top >= 0 {
		for j := range c.cols {
			v := float32(0.5)
			if sign[j] < 0 {
				v = -0.5
			}
			f[c.top*c.cols+j] = v
		}
		for _, r := range c.dups {
			copy(f[r*c.cols:(r+1)*c.cols], f[c.top*c.cols:(c.top+1)*c.cols])
		}
	}
	return f
}

// q8HeadCase returns c's matrix as Q8_0 (the NaN rows' first block scale set to an f16 NaN).
func q8HeadCase(t *testing.T, rng *rand.Rand, c headCase, sign []float32) *model.Tensor {
	f := headWeights(rng, c, sign)
	e := &model.Tensor{Name: "output.weight", Type: model.TypeF16, Shape: []uint64{uint64(c.cols), uint64(c.rows)}, Data: model.EncodeF16(f)}
	q, err := model.QuantizeQ8_0Matrix(e)
	require.NoError(t, err)
	rowBytes := c.cols / model.Q8_0BlockElems * model.Q8_0BlockBytes
	for _, r := range c.nans() {
		binary.LittleEndian.PutUint16(q.Data[r*rowBytes:], f16NaN)
	}
	return q
}

// TestQ8FusedNormParity: the one-token q8_0 head with the output norm in its prologue
// (Q8Args.Norm: every workgroup computes RMSNorm and the int8 quantization of x itself, with
// rmsnorm_quant's code) gives cpuref.RMSNorm → QuantizeActivations → LogitsQ8 bit for bit — the
// logits of the separate rmsnorm_quant and Q8MatMul (TestQ8MatMulParity) — on every variant,
// widths of 2 to 256 blocks (up to NormFuseMaxCols: the shared activations full), inputs of
// magnitude 1 and 1e-3, the matrix in chunks of 50 rows. A fused norm takes one token and at
// most NormFuseMaxCols columns.
func TestQ8FusedNormParity(t *testing.T) {
	const eps = 1e-5
	for _, disable := range [][]string{nil, {"dot"}, {"subgroup-shuffle"}} {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("q8_gemv_norm"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(61, 62))
			for _, c := range []struct{ rows, cols int }{{1, 64}, {37, 96}, {301, 256}, {129, 1056}, {67, 2560}, {19, NormFuseMaxCols}} {
				_, q := q8Tensor(t, rng, c.rows, c.cols)
				mat := uploadQ8Chunked(t, d, q, c.rows, c.cols, 50)
				t.Cleanup(func() {
					for _, b := range mat.buffers() {
						b.Release()
					}
				})
				for _, scale := range []float32{1, 1e-3} {
					name := fmt.Sprintf("%dx%d scale %g", c.rows, c.cols, scale)
					x, w, qa, s := normToken(t, rng, c.cols, eps, scale)
					want := make([]float32, c.rows)
					require.NoError(t, cpuref.LogitsQ8(want, qa, s[0], q))
					bx, bw, by := newBuf(t, d, x), newBuf(t, d, w), zeroBuf(t, d, 4*c.rows)
					require.NoError(t, d.Run(func(sq *gpu.Sequence) error {
						return ks.Q8MatMul(sq, mat, gpu.Range{}, gpu.Range{}, by.Whole(), Q8Args{T: 1, YStride: uint32(c.rows), Norm: &NormInput{X: bx.Whole(), W: bw.Whole(), Eps: eps}})
					}), name)
					got := readF32(t, by, c.rows)
					for r := range c.rows {
						require.Equal(t, math.Float32bits(want[r]), math.Float32bits(got[r]), "%s row %d: cpu %v gpu %v", name, r, want[r], got[r])
					}
				}
			}
		})
	}
	d, ks := newKernels(t)
	_, q := q8Tensor(t, rand.New(rand.NewPCG(1, 2)), 8, 64)
	mat := uploadQ8Chunked(t, d, q, 8, 64, 8)
	defer func() {
		for _, b := range mat.buffers() {
			b.Release()
		}
	}()
	x := newBuf(t, d, make([]float32, 64))
	y := zeroBuf(t, d, 4*8*3)
	err := d.Run(func(s *gpu.Sequence) error {
		return ks.Q8MatMul(s, mat, gpu.Range{}, gpu.Range{}, y.Whole(), Q8Args{T: 3, YStride: 8, Norm: &NormInput{X: x.Whole(), W: x.Whole()}})
	})
	require.ErrorContains(t, err, "a fused output norm takes 1 token")
	err = d.Run(func(s *gpu.Sequence) error {
		return ks.Q8MatMul(s, mat, gpu.Range{}, gpu.Range{}, y.Whole(), Q8Args{T: 1, YStride: 8, Norm: &NormInput{X: x.Slice(0, 32), W: x.Whole()}})
	})
	require.ErrorContains(t, err, "norm")
}

// TestQ8ArgmaxParity: the greedy q8_0 head (Q8MatMulArgmax: each workgroup's best row as a
// candidate pair, then ArgmaxReduce) picks cpuref.Argmax of cpuref.LogitsQ8's logits — with the
// output norm fused (Q8Args.Norm) and on rmsnorm_quant's activations — on every variant, over
// the crafted heads of headCases: ties of the largest logit within a workgroup and across
// workgroups and chunks (the lowest row wins), NaN logits skipped (the top row's NaN: its next
// tie wins), every logit NaN (0xffffffff: DecodeGreedy's "no maximum"), every logit +0 (row 0).
func TestQ8ArgmaxParity(t *testing.T) {
	const eps = 1e-5
	for _, disable := range [][]string{nil, {"dot"}, {"subgroup-shuffle"}} {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("q8_gemv_argmax"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(63, 64))
			for _, c := range headCases {
				x, w, qa, s := normToken(t, rng, c.cols, eps, 1)
				sign := make([]float32, c.cols)
				for j, v := range qa {
					sign[j] = float32(v)
				}
				q := q8HeadCase(t, rng, c, sign)
				const chunk = 200
				mat := uploadQ8Chunked(t, d, q, c.rows, c.cols, chunk)
				logits := make([]float32, c.rows)
				require.NoError(t, cpuref.LogitsQ8(logits, qa, s[0], q))
				want := argmaxWant(logits)
				if c.top >= 0 && !c.allNaN && len(c.nanRows) == 0 {
					require.Equal(t, uint32(c.top), want, "%s: the crafted top row wins on the CPU", c.name)
				}
				sq := []uint32{math.Float32bits(cpuref.Rcp32(s[0])), 0}
				ba, bsq, bx, bw := newBuf(t, d, PackInt8(qa)), newBuf(t, d, sq), newBuf(t, d, x), newBuf(t, d, w)
				n := mat.ArgmaxCandidates()
				var groups uint32 // 128 rows a workgroup: the last one of a chunk partial
				for r0 := 0; r0 < c.rows; r0 += chunk {
					groups += uint32(min(chunk, c.rows-r0)+127) / 128
				}
				require.Equal(t, groups, n)
				for _, fused := range []bool{false, true} {
					m := Q8Args{T: 1, YOff: 3} // candidates from pair 3: the offset is honoured
					if fused {
						m.Norm = &NormInput{X: bx.Whole(), W: bw.Whole(), Eps: eps}
					}
					parts, out := newBuf(t, d, make([]uint32, 2*(n+3))), zeroBuf(t, d, 8)
					require.NoError(t, d.Run(func(seq *gpu.Sequence) error {
						if err := ks.Q8MatMulArgmax(seq, mat, ba.Whole(), bsq.Whole(), parts.Whole(), m); err != nil {
							return err
						}
						return ks.ArgmaxReduce(seq, parts.Whole(), out.Whole(), n, 3, 1)
					}))
					got, err := gpu.Read[uint32](out, 1, 1)
					require.NoError(t, err)
					require.Equal(t, want, got[0], "%s fused %v", c.name, fused)
				}
				for _, b := range mat.buffers() {
					b.Release()
				}
			}
		})
	}
	d, ks := newKernels(t)
	_, q := q8Tensor(t, rand.New(rand.NewPCG(1, 2)), 16, 64)
	mat := uploadQ8Chunked(t, d, q, 16, 64, 8)
	defer func() {
		for _, b := range mat.buffers() {
			b.Release()
		}
	}()
	a, parts := zeroBuf(t, d, 64*3), zeroBuf(t, d, 8)
	err := d.Run(func(s *gpu.Sequence) error {
		return ks.Q8MatMulArgmax(s, mat, a.Whole(), a.Whole(), parts.Whole(), Q8Args{T: 2})
	})
	require.ErrorContains(t, err, "2 tokens, takes 1")
	err = d.Run(func(s *gpu.Sequence) error {
		return ks.Q8MatMulArgmax(s, mat, a.Whole(), a.Whole(), parts.Whole(), Q8Args{T: 1})
	})
	require.ErrorContains(t, err, "candidate pairs", "2 chunks of 8 rows: 2 workgroups' pairs do not fit 8 bytes")
}

// TestF16ArgmaxParity: the greedy F16 head (F16MatMulArgmax, then ArgmaxReduce) picks
// cpuref.Argmax of cpuref.Logits' values on both variants over headCases (an f16 NaN weight in a
// row makes its logit NaN), the matrix in chunks of 64 rows.
func TestF16ArgmaxParity(t *testing.T) {
	for _, disable := range [][]string{nil, {"subgroup-shuffle"}} {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("f16_gemv_argmax"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(65, 66))
			for _, c := range headCases {
				x := randFloats(rng, uint32(c.cols))
				f := headWeights(rng, c, x)
				data := model.EncodeF16(f)
				for _, r := range c.nans() {
					binary.LittleEndian.PutUint16(data[2*(r*c.cols+c.cols/2):], f16NaN)
				}
				e := &model.Tensor{Name: "output.weight", Type: model.TypeF16, Shape: []uint64{uint64(c.cols), uint64(c.rows)}, Data: data}
				logits := make([]float32, c.rows)
				require.NoError(t, cpuref.Logits(logits, x, e))
				want := argmaxWant(logits)
				be := newBuf(t, d, data)
				mat := &F16Matrix{Name: e.Name, Rows: uint32(c.rows), Cols: uint32(c.cols)}
				rowBytes := uint64(2 * c.cols)
				for r0 := 0; r0 < c.rows; r0 += 64 { // 64 rows: chunk offsets aligned for every device
					n := min(64, c.rows-r0)
					mat.Chunks = append(mat.Chunks, F16Chunk{Row0: uint32(r0), Rows: uint32(n), Buf: be.Slice(uint64(r0)*rowBytes, uint64(n)*rowBytes)})
				}
				n := mat.ArgmaxCandidates()
				bx := newBuf(t, d, append(make([]float32, 5), x...))
				parts, out := newBuf(t, d, make([]uint32, 2*n)), zeroBuf(t, d, 4)
				require.NoError(t, d.Run(func(seq *gpu.Sequence) error {
					if err := ks.F16MatMulArgmax(seq, mat, bx.Whole(), parts.Whole(), F16Args{T: 1, XOff: 5}); err != nil {
						return err
					}
					return ks.ArgmaxReduce(seq, parts.Whole(), out.Whole(), n, 0, 0)
				}))
				got, err := gpu.Read[uint32](out, 0, 1)
				require.NoError(t, err)
				require.Equal(t, want, got[0], c.name)
			}
		})
	}
}

// TestArgmaxParallelParity: the two-level argmax (ArgmaxParallel: argmax_partial's workgroups of
// 2048 grid-strided elements, then argmax_reduce) and the one-workgroup argmax (Argmax) give
// cpuref.Argmax's index for lengths around the workgroup shares (1 .. 128,256: up to 63
// candidates) and crafted cases: the largest value tied in different workgroups and different
// invocations of one, -0 and +0 as the largest (equal: the lower index wins, whichever sign it
// has), NaNs (first element, the largest's place), every element NaN (0xffffffff), ±Inf.
func TestArgmaxParallelParity(t *testing.T) {
	d, ks := newKernels(t)
	rng := rand.New(rand.NewPCG(67, 68))
	nan := float32(math.NaN())
	negZero := float32(math.Copysign(0, -1))
	for _, n := range []int{1, 7, 255, 2047, 2048, 2049, 5000, 128256} {
		base := randFloats(rng, uint32(n))
		type tc struct {
			name string
			edit func(x []float32)
		}
		hi := n - 1
		cases := []tc{
			{"random", func([]float32) {}},
			{"tie-groups", func(x []float32) { x[n/3], x[hi] = 100, 100; x[min(hi, n/3+2048)] = 100 }},
			{"tie-lanes", func(x []float32) { x[hi] = 100; x[max(0, hi-1)] = 100; x[max(0, hi-256)] = 100 }},
			{"neg-zero-first", func(x []float32) {
				for i := range x {
					x[i] = -1 - float32(i%5)
				}
				x[n/2], x[hi] = negZero, 0
			}},
			{"pos-zero-first", func(x []float32) {
				for i := range x {
					x[i] = -1 - float32(i%5)
				}
				x[n/2], x[hi] = 0, negZero
			}},
			{"nan", func(x []float32) { x[0] = nan; x[n/2] = 100; x[hi] = 99; x[n/2] = nan }},
			{"all-nan", func(x []float32) {
				for i := range x {
					x[i] = nan
				}
			}},
			{"inf", func(x []float32) { x[hi] = float32(math.Inf(1)); x[0] = float32(math.Inf(-1)) }},
			{"neg-inf", func(x []float32) {
				for i := range x {
					x[i] = float32(math.Inf(-1))
				}
				x[hi] = nan
			}},
		}
		for _, c := range cases {
			x := append([]float32(nil), base...)
			c.edit(x)
			want := argmaxWant(x)
			name := fmt.Sprintf("n=%d %s", n, c.name)
			g := ArgmaxParallelCandidates(uint32(n))
			require.Equal(t, uint32((n+2047)/2048), g, name)
			bx := newBuf(t, d, append([]float32{7, 8}, x...)) // from element 2
			parts, out := zeroBuf(t, d, 8*int(g)), zeroBuf(t, d, 8)
			require.NoError(t, d.Run(func(s *gpu.Sequence) error {
				return ks.ArgmaxParallel(s, bx.Whole(), parts.Whole(), out.Whole(), uint32(n), 2, 1)
			}))
			got, err := gpu.Read[uint32](out, 1, 1)
			require.NoError(t, err)
			require.Equal(t, want, got[0], "%s: parallel", name)
			parts.Release()
			out.Release()
			bx.Release()
		}
	}
	x := newBuf(t, d, make([]float32, 8))
	require.Error(t, d.Run(func(s *gpu.Sequence) error { return ks.ArgmaxParallel(s, x.Whole(), x.Whole(), x.Whole(), 9, 0, 0) }))
	require.Error(t, d.Run(func(s *gpu.Sequence) error { return ks.ArgmaxReduce(s, x.Whole(), x.Whole(), 5, 0, 0) }))
}

// TestGPUGreedyFusedHead: the greedy step (DecodeGreedy: the LM head writes argmax candidates,
// argmax_reduce picks the token, no logits) gives cpuref's greedy tokens — 24 steps after a
// prompt — with the q8_0 head (output norm fused into its GEMV on the forced GPU policy, separate
// on the CPU drivers' own) and the F16 head, an odd vocabulary (301) and the built-in tiny
// vocabulary. GreedyStructure: the logits step's dispatches and barriers plus argmax_reduce's,
// and the q8_0 head's step one dispatch shorter than the F16 head's where the norms are fused.
func TestGPUGreedyFusedHead(t *testing.T) {
	prompt := []int{1, 72, 101, 108, 108, 111, 44, 32}
	greedy := map[string]int{} // GreedyStructure's dispatches by "head fuse"
	for _, vocab := range []int{0, 301} {
		m := synthModel(t, model.TypeI2_S, func(o *model.SynthOptions) {
			if vocab > 0 {
				o.Vocab = vocab
			}
		})
		for _, head := range []cpuref.LMHead{cpuref.LMHeadQ8_0, cpuref.LMHeadF16} {
			for _, fuse := range []bool{true, false} {
				t.Run(fmt.Sprintf("vocab%d-%s-fuse%v", m.Config.VocabSize, head, fuse), func(t *testing.T) {
					g, err := NewGPU(gputest.Open(t), m, GPUOptions{Ctx: 64, LMHead: head, fuseNorms: fuse})
					require.NoError(t, err)
					defer g.Close()
					cr, err := cpuref.New(m, 64, cpuref.WithLMHead(head))
					require.NoError(t, err)
					d0, b0, s0 := g.GreedyStructure()
					require.Equal(t, [3]int{0, 0, 0}, [3]int{d0, b0, s0}, "not recorded before the first DecodeGreedy")
					lc, err := cr.Prefill(prompt, false)
					require.NoError(t, err)
					_, err = g.Prefill(prompt, false)
					require.NoError(t, err)
					next := cpuref.Argmax(lc)
					for step := range 24 {
						id, err := g.DecodeGreedy(next)
						require.NoError(t, err)
						lc, err = cr.Decode(next)
						require.NoError(t, err)
						next = cpuref.Argmax(lc)
						require.Equal(t, next, id, "greedy step %d", step)
					}
					require.Equal(t, 24, g.GreedySteps())
					_, err = g.Decode(next) // the logits step's first submit ends its recording (its last barrier)
					require.NoError(t, err)
					dd, db, ds := g.DecodeStructure()
					gd, gb, gs := g.GreedyStructure()
					require.Equal(t, dd+1, gd, "the logits step's dispatches and argmax_reduce")
					require.Equal(t, db+1, gb, "argmax_reduce is one more dependent stage")
					require.Equal(t, ds, gs)
					greedy[fmt.Sprintf("%s %v", head, fuse)] = gd
				})
			}
		}
		// The heads' steps differ only in the output norm: fused into the q8_0 GEMV on the GPU
		// policy (one dispatch fewer than the F16 head's rmsnorm), separate otherwise.
		f16, q8 := string(cpuref.LMHeadF16), string(cpuref.LMHeadQ8_0)
		require.Equal(t, greedy[f16+" true"]-1, greedy[q8+" true"], "vocab %d", m.Config.VocabSize)
		require.Equal(t, greedy[f16+" false"], greedy[q8+" false"], "vocab %d", m.Config.VocabSize)
	}
}

// TestGPUGreedyAllNaN: when every logit is NaN (an untied output matrix of NaNs: F16, or Q8_0
// with NaN block scales, used as it is) cpuref.Argmax finds no maximum and DecodeGreedy reports
// the error, for both heads, norms fused or not.
func TestGPUGreedyAllNaN(t *testing.T) {
	for _, typ := range []model.TensorType{model.TypeF16, model.TypeQ8_0} {
		for _, fuse := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s-fuse%v", typ, fuse), func(t *testing.T) {
				m := synthModel(t, model.TypeI2_S, nil)
				embd := m.Tensors["token_embd.weight"]
				out := make([]float32, embd.Elements())
				var data []byte
				if typ == model.TypeF16 {
					for i := range out {
						out[i] = float32(math.NaN())
					}
					data = model.EncodeF16(out)
				} else {
					var err error
					data, err = model.EncodeQ8_0(out)
					require.NoError(t, err)
					for b := 0; b < len(data); b += model.Q8_0BlockBytes {
						binary.LittleEndian.PutUint16(data[b:], f16NaN)
					}
				}
				m.Tensors["output.weight"] = &model.Tensor{Name: "output.weight", Type: typ, Shape: embd.Shape, Data: data}
				m.Config.TiedEmbedding = false
				head := cpuref.LMHeadF16
				if typ == model.TypeQ8_0 {
					head = cpuref.LMHeadQ8_0
				}
				g, err := NewGPU(gputest.Open(t), m, GPUOptions{Ctx: 16, LMHead: head, fuseNorms: fuse})
				require.NoError(t, err)
				defer g.Close()
				cr, err := cpuref.New(m, 16, cpuref.WithLMHead(head))
				require.NoError(t, err)
				lc, err := cr.Decode(1)
				require.NoError(t, err)
				require.Equal(t, -1, cpuref.Argmax(lc))
				_, err = g.DecodeGreedy(1)
				require.ErrorContains(t, err, "no maximum")
			})
		}
	}
}
