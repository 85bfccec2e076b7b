//go:build cgo

package runtime

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// blockScaleTensor returns a TQ1_0 or TQ2_0 matrix whose 256-column blocks carry scales drawn
// from a small set (so rows have runs of equal scales of every length, as llama-quantize's and
// TriLM's files do), with zero-scale blocks (some all-zero trits, some not) and one row made of
// a single scale (one run).
func blockScaleTensor(t *testing.T, rng *rand.Rand, rows, cols int, typ model.TensorType) *model.TernaryMatrix {
	trits := make([]int8, rows*cols)
	for i := range trits {
		trits[i] = int8(rng.IntN(3) - 1)
	}
	set := []float32{0.0625, 0.1, 0.1 + 1.0/1024, 0.37, 0}
	scales := make([]float32, rows*cols/256)
	for i := range scales {
		switch {
		case i > 0 && rng.IntN(2) == 0:
			scales[i] = scales[i-1] // extend the run
		default:
			scales[i] = set[rng.IntN(len(set))]
		}
		if scales[i] == 0 && rng.IntN(2) == 0 {
			clear(trits[i*256 : (i+1)*256]) // an all-zero block as llama-quantize writes it
		}
	}
	G := cols / 256
	for g := range G { // row 1: one scale throughout
		scales[G+g] = 0.25
	}
	var data []byte
	var err error
	if typ == model.TypeTQ1_0 {
		data, err = model.EncodeTQ1_0(trits, scales)
	} else {
		data, err = model.EncodeTQ2_0(trits, scales)
	}
	require.NoError(t, err)
	m, err := model.NewTernaryMatrix(&model.Tensor{Name: "w", Type: typ, Shape: []uint64{uint64(cols), uint64(rows)}, Data: data})
	require.NoError(t, err)
	return m
}

// TestTernaryMatMulBlockScalesParity: TQ tensors whose blocks carry different scales (runs of
// equal scales, zero-scale blocks) run in the per-block path of ternary_matmul.comp, which follows
// cpuref.TernaryMatMul's order — runs summed in int32, one f32 term per run added in column order,
// then the product by 1/s — so every output, GEMV and GEMM, plain and accumulated, with and
// without an output scale, has cpuref's bits, on every variant (dot, subgroup, shared).
func TestTernaryMatMulBlockScalesParity(t *testing.T) {
	for _, disable := range [][]string{nil, {"dot"}, {"subgroup-arithmetic"}} {
		d, ks := newKernels(t, disable...)
		t.Run(ks.Variant("ternary_gemv"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(21, 22))
			cases := []struct {
				rows, cols int
				typ        model.TensorType
			}{{9, 256, model.TypeTQ2_0}, {37, 1536, model.TypeTQ2_0}, {70, 2560, model.TypeTQ1_0}, {5, 768, model.TypeTQ1_0}}
			for _, c := range cases {
				m := blockScaleTensor(t, rng, c.rows, c.cols, c.typ)
				words, scale, blocks, err := RepackTernaryBlocks(m)
				require.NoError(t, err)
				if c.cols > 256 {
					require.NotNil(t, blocks, "%dx%d: the blocks differ", c.rows, c.cols)
				}
				off := uint32(0)
				if blocks != nil {
					off = uint32(len(words))
					for _, sc := range blocks {
						words = append(words, math.Float32bits(sc))
					}
				}
				bw := newBuf(t, d, words)
				for _, oscale := range []float32{0, 1.5} {
					w := &TernaryWeights{Name: "w", Rows: uint32(c.rows), Cols: uint32(c.cols), Scale: scale, OutScale: oscale, BlockScales: off, Buf: bw.Whole()}
					for _, T := range []int{1, 3, 17} {
						q, s, sq := quantTokens(t, rng, T, c.cols)
						want := bitLinear(t, m, q, s, oscale)
						requireTernaryMatMul(t, d, ks, w, q, sq, want, randFloats(rng, uint32(T*c.rows)),
							fmt.Sprintf("%s %dx%d T=%d oscale %v", c.typ, c.rows, c.cols, T, oscale))
					}
				}
				bw.Release()
			}
		})
	}
}

// TestRepackTernaryBlocks: one scale for the whole tensor gives nil blocks (the per-tensor path);
// a single zero-scale block among equal ones, or two different scales, gives every block's scale.
func TestRepackTernaryBlocks(t *testing.T) {
	trits := make([]int8, 1024)
	for _, c := range []struct {
		scales []float32
		blocks bool
	}{{[]float32{0.5, 0.5, 0.5, 0.5}, false}, {[]float32{0.5, 0, 0.5, 0.5}, true}, {[]float32{1, 2, 1, 2}, true}} {
		data, err := model.EncodeTQ2_0(trits, c.scales)
		require.NoError(t, err)
		m, err := model.NewTernaryMatrix(&model.Tensor{Name: "w", Type: model.TypeTQ2_0, Shape: []uint64{512, 2}, Data: data})
		require.NoError(t, err)
		_, scale, blocks, err := RepackTernaryBlocks(m)
		require.NoError(t, err)
		require.Equal(t, c.scales[0], scale)
		if !c.blocks {
			require.Nil(t, blocks)
			continue
		}
		require.Equal(t, c.scales, blocks)
	}
}

// zeroBlocks returns a copy of m whose tensor name has the TQ blocks idx zeroed as llama-quantize
// writes an all-zero block: scale d = 0 (its last two bytes) and, for TQ2_0, every trit 0 (code 1)
// — the first given block keeps its trits, so a zero scale over non-zero trits is covered too.
func zeroBlocks(t *testing.T, m *model.Model, name string, idx ...int) *model.Model {
	src := m.Tensors[name]
	require.NotNil(t, src, name)
	cp := *src
	cp.Data = append([]byte(nil), src.Data...)
	bb := model.TQ2_0BlockBytes
	if cp.Type == model.TypeTQ1_0 {
		bb = model.TQ1_0BlockBytes
	}
	for i, b := range idx {
		blk := cp.Data[b*bb : (b+1)*bb]
		blk[bb-2], blk[bb-1] = 0, 0
		if i > 0 && cp.Type == model.TypeTQ2_0 {
			for j := 0; j < 64; j++ {
				blk[j] = 0x55
			}
		}
	}
	tensors := make(map[string]*model.Tensor, len(m.Tensors))
	for k, v := range m.Tensors {
		tensors[k] = v
	}
	tensors[name] = &cp
	out := *m
	out.Tensors = tensors
	return &out
}

// TestGPUMatchesCPUBlockScales: whole models whose TQ projections carry a scale per 256-weight
// block (model.SynthOptions.BlockScales), and per-tensor-scale models with all-zero blocks (stored
// scale 0) in some projections, run on the GPU (no refusal) and give cpuref's logits bit for bit,
// prefill and decode; the per-block scales are counted in the memory plan.
func TestGPUMatchesCPUBlockScales(t *testing.T) {
	prompt := []int{1, 40, 41, 72, 101, 108, 108, 111, 32, 119}
	for _, typ := range []model.TensorType{model.TypeTQ2_0, model.TypeTQ1_0} {
		t.Run(typ.String()+"/block-scales", func(t *testing.T) {
			m := synthModel(t, typ, func(o *model.SynthOptions) { o.BlockScales = true })
			g, c := newBackendPair(t, m, 64)
			requireSameForward(t, c, g, prompt, 6)
			require.Greater(t, g.Plan().Weights, PlanMemory(m.Config, 64, false).Weights, "per-block scales on the device")
		})
		t.Run(typ.String()+"/zero-block", func(t *testing.T) {
			m := synthModel(t, typ, nil)
			m = zeroBlocks(t, m, "blk.0.ffn_up.weight", 5, 6, 40)
			m = zeroBlocks(t, m, "blk.1.attn_q.weight", 0, 3)
			m = zeroBlocks(t, m, "blk.0.ffn_down.weight", 1, 3, 5) // 3 blocks a row: runs split by a zero block
			g, c := newBackendPair(t, m, 64)
			requireSameForward(t, c, g, prompt, 6)
		})
	}
}
