//go:build cgo

package runtime

import (
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

// q8Tensor returns a rows x cols F16 matrix of random weights (a few rows scaled far apart, so
// block scales differ by orders of magnitude) and its Q8_0 re-quantization.
func q8Tensor(t *testing.T, rng *rand.Rand, rows, cols int) (*model.Tensor, *model.Tensor) {
	f := randFloats(rng, uint32(rows*cols))
	for i := range f {
		f[i] *= float32(math.Ldexp(1, (i/cols)%7-3))
	}
	e := &model.Tensor{Name: "output.weight", Type: model.TypeF16, Shape: []uint64{uint64(cols), uint64(rows)}, Data: model.EncodeF16(f)}
	q, err := model.QuantizeQ8_0Matrix(e)
	require.NoError(t, err)
	return e, q
}

// TestQ8MatMulParity: the Q8_0 LM head kernel against cpuref.LogitsQ8 over swept shapes (odd
// vocabularies, widths 64..2560 — 2..80 blocks a row, so some lanes hold no block and some
// several — and 1, 3 and 17 tokens, i.e. the GEMV and the 8-token-tiled GEMM with a partial tile),
// with the matrix split into several row chunks of NewQ8Matrix (a chunk limit forced small). The
// per-block int32 dot products are exact and every float operation happens in the same order on
// both sides, so every logit must be bit-identical, on every variant the device has: packed dot
// product with shuffles, unpacked with shuffles, unpacked in shared memory.
func TestQ8MatMulParity(t *testing.T) {
	for _, disable := range [][]string{nil, {"dot"}, {"subgroup-shuffle"}} {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("q8_gemv"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(13, 14))
			for _, c := range []struct{ rows, cols int }{{1, 64}, {37, 96}, {301, 256}, {129, 1056}, {67, 2560}} {
				_, q := q8Tensor(t, rng, c.rows, c.cols)
				mat := uploadQ8Chunked(t, d, q, c.rows, c.cols, 50)
				for _, T := range []int{1, 3, 17} {
					name := fmt.Sprintf("%dx%d T=%d", c.rows, c.cols, T)
					a, s, sq := quantTokens(t, rng, T, c.cols)
					ba, bsq, by := newBuf(t, d, PackInt8(a)), newBuf(t, d, sq), zeroBuf(t, d, 4*T*c.rows)
					require.NoError(t, d.Run(func(sq *gpu.Sequence) error {
						return ks.Q8MatMul(sq, mat, ba.Whole(), bsq.Whole(), by.Whole(), Q8Args{T: uint32(T), YStride: uint32(c.rows)})
					}), name)
					got := readF32(t, by, T*c.rows)
					for tok := range T {
						want := make([]float32, c.rows)
						require.NoError(t, cpuref.LogitsQ8(want, a[tok*c.cols:(tok+1)*c.cols], s[tok], q))
						for r := range c.rows {
							require.Equal(t, math.Float32bits(want[r]), math.Float32bits(got[tok*c.rows+r]),
								"%s tok=%d row=%d: cpu %v gpu %v", name, tok, r, want[r], got[tok*c.rows+r])
						}
					}
					for _, b := range []*gpu.Buffer{ba, bsq, by} {
						b.Release()
					}
				}
				for _, b := range mat.buffers() {
					b.Release()
				}
			}
		})
	}
}

// uploadQ8Chunked uploads the Q8_0 matrix q as a Q8Matrix in chunks of per rows (the last one
// shorter), the layout NewQ8Matrix makes with a small binding limit.
func uploadQ8Chunked(t *testing.T, d *gpu.Device, q *model.Tensor, rows, cols, per int) *Q8Matrix {
	rowBytes := cols / model.Q8_0BlockElems * model.Q8_0BlockBytes
	mat := &Q8Matrix{Name: q.Name, Rows: uint32(rows), Cols: uint32(cols)}
	for r0 := 0; r0 < rows; r0 += per {
		n := min(per, rows-r0)
		w, s, err := RepackQ8_0(q.Data[r0*rowBytes:(r0+n)*rowBytes], n, cols)
		require.NoError(t, err)
		bw, err := gpu.NewBufferFrom(d, w)
		require.NoError(t, err)
		bs, err := gpu.NewBufferFrom(d, s)
		require.NoError(t, err)
		mat.Chunks = append(mat.Chunks, Q8Chunk{Row0: uint32(r0), Rows: uint32(n), Weights: bw.Whole(), Scales: bs.Whole()})
	}
	return mat
}

// TestNewQ8MatrixLayout: NewQ8Matrix's chunks, read back, hold exactly the int8 weights and f16
// scales of model.QuantizeQ8_0Matrix's blocks, and their sizes add up to Q8HeadBytes (an odd
// vocabulary with an odd block count per row, so the scale padding shows).
func TestNewQ8MatrixLayout(t *testing.T) {
	d, _ := newKernels(t)
	rng := rand.New(rand.NewPCG(15, 16))
	const rows, cols = 301, 96
	e, q := q8Tensor(t, rng, rows, cols)
	mat, err := NewQ8Matrix(d, e, rows, cols)
	require.NoError(t, err)
	defer func() {
		for _, b := range mat.buffers() {
			b.Release()
		}
	}()
	var bytes uint64
	var weights []byte
	var scales []uint16
	for _, c := range mat.Chunks {
		bytes += c.Weights.Size + c.Scales.Size
		w, err := gpu.Read[byte](c.Weights.Buf, 0, int(c.Weights.Size))
		require.NoError(t, err)
		s, err := gpu.Read[uint16](c.Scales.Buf, 0, int(c.Scales.Size/2))
		require.NoError(t, err)
		weights = append(weights, w...)
		scales = append(scales, s[:int(c.Rows)*cols/32]...)
	}
	require.Equal(t, Q8HeadBytes(rows, cols), bytes)
	for b := 0; b < rows*cols/32; b++ {
		blk := q.Data[b*34 : (b+1)*34]
		require.Equal(t, uint16(blk[0])|uint16(blk[1])<<8, scales[b], "block %d scale", b)
		require.Equal(t, blk[2:], weights[b*32:(b+1)*32], "block %d weights", b)
	}
}

// newBackendPairHead is newBackendPair with the LM head h on both backends.
func newBackendPairHead(t *testing.T, m *model.Model, ctx int, h cpuref.LMHead) (*GPU, *cpuref.Backend) {
	g, err := NewGPU(gputest.Open(t), m, GPUOptions{Ctx: ctx, LMHead: h})
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	c, err := cpuref.New(m, ctx, cpuref.WithLMHead(h))
	require.NoError(t, err)
	return g, c
}

// requireSameLogits runs prompt (prefill, every row) and then decode steps fed the greedy tokens
// on both backends and requires bit-identical logits throughout; it returns the CPU's prefill
// logits.
func requireSameLogits(t *testing.T, g *GPU, c *cpuref.Backend, prompt []int, steps int) []float32 {
	t.Helper()
	vocab := g.Config().VocabSize
	lc, err := c.Prefill(prompt, true)
	require.NoError(t, err)
	lg, err := g.Prefill(prompt, true)
	require.NoError(t, err)
	requireLogitsEqual(t, lc, lg, vocab, "prefill")
	first := lc
	next := cpuref.Argmax(lc[len(lc)-vocab:])
	for step := range steps {
		lc, err = c.Decode(next)
		require.NoError(t, err)
		lg, err = g.Decode(next)
		require.NoError(t, err)
		requireLogitsEqual(t, lc, lg, vocab, fmt.Sprintf("decode step %d", step))
		next = cpuref.Argmax(lc)
	}
	return first
}

// TestGPUMatchesCPUWholeModelHeads: with either `--lm-head` (named explicitly, whatever the
// default) the GPU's logits equal the CPU's bit for bit — prefill of a 17-token prompt (every row)
// and 32 decode steps — for I2_S and TQ2_0 weights and an odd vocabulary (301). The q8_0 head must
// really run on both: its logits differ from the f16 head's.
func TestGPUMatchesCPUWholeModelHeads(t *testing.T) {
	prompt := []int{1, 40, 41, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33, 10, 5}
	for _, c := range []struct {
		typ   model.TensorType
		vocab int
	}{{model.TypeI2_S, 0}, {model.TypeTQ2_0, 0}, {model.TypeI2_S, 301}} {
		m := synthModel(t, c.typ, func(o *model.SynthOptions) {
			if c.vocab > 0 {
				o.Vocab = c.vocab
			}
		})
		var first [2][]float32
		for i, h := range []cpuref.LMHead{cpuref.LMHeadF16, cpuref.LMHeadQ8_0} {
			t.Run(fmt.Sprintf("%s-vocab%d-%s", c.typ, m.Config.VocabSize, h), func(t *testing.T) {
				g, cpu := newBackendPairHead(t, m, 128, h)
				require.Equal(t, h, g.LMHead())
				require.Equal(t, h, cpu.LMHead())
				first[i] = requireSameLogits(t, g, cpu, prompt, 32)
			})
		}
		require.NotEqual(t, first[0], first[1], "the q8_0 head gives the f16 head's logits")
	}
}

// TestGPUQ8HeadOutputTypes: an untied output.weight in F32 or BF16 (which the f16 head refuses on
// the GPU) is re-quantized by both backends to the same Q8_0 bytes, and one already stored as Q8_0
// (as llama-quantize writes it) runs the q8_0 head as it is, whatever --lm-head says: logits bit
// for bit equal, prefill and decode.
func TestGPUQ8HeadOutputTypes(t *testing.T) {
	prompt := []int{1, 72, 101, 108, 108, 111}
	rng := rand.New(rand.NewPCG(23, 24))
	for _, c := range []struct {
		typ  model.TensorType
		head cpuref.LMHead
	}{{model.TypeF32, cpuref.LMHeadQ8_0}, {model.TypeBF16, cpuref.LMHeadQ8_0}, {model.TypeQ8_0, cpuref.LMHeadF16}} {
		t.Run(c.typ.String(), func(t *testing.T) {
			m := synthModel(t, model.TypeI2_S, nil)
			embd := m.Tensors["token_embd.weight"]
			out := make([]float32, embd.Elements())
			for i := range out {
				out[i] = float32(rng.NormFloat64() * 0.05)
			}
			var data []byte
			switch c.typ {
			case model.TypeF32:
				data = model.EncodeF32(out)
			case model.TypeBF16:
				data = model.EncodeBF16(out)
			case model.TypeQ8_0:
				var err error
				data, err = model.EncodeQ8_0(out)
				require.NoError(t, err)
			}
			m.Tensors["output.weight"] = &model.Tensor{Name: "output.weight", Type: c.typ, Shape: embd.Shape, Data: data}
			m.Config.TiedEmbedding = false
			if c.typ != model.TypeQ8_0 {
				_, err := NewGPU(gputest.Open(t), m, GPUOptions{Ctx: 64, LMHead: cpuref.LMHeadF16})
				require.ErrorContains(t, err, "tensor output.weight: type "+c.typ.String())
			}
			g, cpu := newBackendPairHead(t, m, 64, c.head)
			require.Equal(t, cpuref.LMHeadQ8_0, g.LMHead())
			requireSameLogits(t, g, cpu, prompt, 2)
		})
	}
}

// TestGPUGreedyOnDeviceQ8Head: greedy generation with the q8_0 head takes the GPU's DecodeGreedy
// path (argmax on the device over the q8_0 logits) and gives the CPU's tokens.
func TestGPUGreedyOnDeviceQ8Head(t *testing.T) {
	m := synthModel(t, model.TypeI2_S, nil)
	g, c := newBackendPairHead(t, m, 64, cpuref.LMHeadQ8_0)
	prompt := EncodePrompt(m.Tokenizer, "Hello world")
	var tokens [2][]int
	for i, b := range []Backend{g, c} {
		st, err := Generate(b, m.Tokenizer, prompt, GenerateOptions{MaxTokens: 32, Context: 64, IgnoreEOS: true})
		require.NoError(t, err)
		tokens[i] = st.Tokens
	}
	require.Equal(t, tokens[1], tokens[0])
	require.Equal(t, 31, g.GreedySteps(), "every decode step took the on-device argmax")
}

// TestGPUMemoryPlanQ8Head: with either LM head the plan NewGPU reports (PlanMemoryHead) is what it
// allocates, to the byte, with an odd vocabulary (the Q8_0 scales' padding). The tied F16 head is
// also the table the step gathers its input from (one copy), while the q8_0 head leaves the F16
// table on the device beside it: its weights are the F16 head's plus Q8HeadBytes.
func TestGPUMemoryPlanQ8Head(t *testing.T) {
	dev := gputest.Open(t)
	m := synthModel(t, model.TypeI2_S, func(o *model.SynthOptions) { o.Vocab = 301 })
	var plans []MemoryPlan
	for _, h := range []cpuref.LMHead{cpuref.LMHeadF16, cpuref.LMHeadQ8_0} {
		before := dev.Live()
		g, err := NewGPU(dev, m, GPUOptions{Ctx: 64, LMHead: h})
		require.NoError(t, err)
		require.NotNil(t, g.embd, "an F16 table is gathered on the device")
		require.Equal(t, h == cpuref.LMHeadF16, g.embdShared, "%s: the gather reads the head's own chunks", h)
		after := dev.Live()
		plan := PlanMemoryHead(m.Config, 64, false, h)
		require.Equal(t, plan, g.Plan())
		require.Equal(t, plan.Total(), after.BufferBytes-before.BufferBytes, "%s: plan %s", h, plan)
		require.NoError(t, g.Close())
		require.Equal(t, before, dev.Live())
		plans = append(plans, plan)
	}
	cfg := m.Config
	require.Equal(t, plans[0].Weights+Q8HeadBytes(cfg.VocabSize, cfg.Dim), plans[1].Weights)
	require.Equal(t, uint64(301*256+(301*8*2)), Q8HeadBytes(301, 256))
}
