//go:build cgo

package runtime

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/gpu/gputest"
	"github.com/bitgpu/bitgpu/model"
)

// embedTable puts t (rows x cols of its type) on d as an EmbedTable of per-row chunks (the last
// shorter when per does not divide rows).
func embedTable(t *testing.T, d *gpu.Device, tn *model.Tensor, rows, cols, per int) *EmbedTable {
	rowBytes := cols * int(embedElemBytes(tn.Type))
	e := &EmbedTable{Name: tn.Name, Type: tn.Type, Rows: uint32(rows), Cols: uint32(cols)}
	for r0 := 0; r0 < rows; r0 += per {
		n := min(per, rows-r0)
		b := newBuf(t, d, tn.Data[r0*rowBytes:(r0+n)*rowBytes])
		e.Chunks = append(e.Chunks, F16Chunk{Row0: uint32(r0), Rows: uint32(n), Buf: b.Whole()})
	}
	return e
}

// TestEmbedGatherParity: embed_gather gives model.FloatRow's bits for every row asked, for F16
// and BF16 tables holding all 65,536 bit patterns (subnormals, infinities, NaNs with payloads)
// and an F32 table of random bits, in one chunk, in 3 (the last shorter) and in 12 (two
// dispatches of at most 8 bindings), with the tokens in random order and repeated.
func TestEmbedGatherParity(t *testing.T) {
	for _, disable := range [][]string{nil, {"subgroup-arithmetic"}} {
		d, ks := newKernels(t, disable...)
		rng := rand.New(rand.NewPCG(61, 62))
		for _, typ := range []model.TensorType{model.TypeF16, model.TypeBF16, model.TypeF32} {
			rows, cols := 256, 256
			var data []byte
			if typ == model.TypeF32 {
				rows, cols = 300, 64
				data = make([]byte, 4*rows*cols)
				for i := 0; i < rows*cols; i++ {
					binary.LittleEndian.PutUint32(data[4*i:], rng.Uint32())
				}
			} else {
				data = make([]byte, 2*rows*cols)
				for i := 0; i < rows*cols; i++ {
					binary.LittleEndian.PutUint16(data[2*i:], uint16(i))
				}
			}
			tn := &model.Tensor{Name: "token_embd.weight", Type: typ, Shape: []uint64{uint64(cols), uint64(rows)}, Data: data}
			tokens := make([]uint32, 0, rows+3)
			for _, r := range rng.Perm(rows) {
				tokens = append(tokens, uint32(r))
			}
			tokens = append(tokens, 0, uint32(rows-1), tokens[0])
			T := len(tokens)
			bt := newBuf(t, d, tokens)
			for _, per := range []int{rows, rows/3 + 1, (rows + 11) / 12} {
				e := embedTable(t, d, tn, rows, cols, per)
				bx := zeroBuf(t, d, 4*T*cols)
				require.NoError(t, d.Run(func(s *gpu.Sequence) error { return ks.EmbedGather(s, e, bt.Whole(), bx.Whole(), uint32(T)) }))
				got, err := gpu.Read[uint32](bx, 0, T*cols)
				require.NoError(t, err)
				want := make([]float32, cols)
				for i, tok := range tokens {
					require.NoError(t, model.FloatRow(tn, int(tok), want))
					for j, v := range want {
						require.Equal(t, math.Float32bits(v), got[i*cols+j], "%s %d chunks token %d (row %d) element %d", typ, len(e.Chunks), i, tok, j)
					}
				}
			}
		}
	}
}

// TestEmbedGatherErrors: block-quantized tables are the host's, chunks must tile the rows in equal
// steps, 16-bit rows must be even, and the token and output ranges must hold T ids and rows.
func TestEmbedGatherErrors(t *testing.T) {
	d, ks := newKernels(t)
	buf := zeroBuf(t, d, 4*64*8)
	chunk := func(row0, rows int) F16Chunk {
		return F16Chunk{Row0: uint32(row0), Rows: uint32(rows), Buf: buf.Whole()}
	}
	for _, c := range []struct {
		e    EmbedTable
		T    uint32
		x    gpu.Range
		want string
	}{
		{EmbedTable{Type: model.TypeQ8_0, Rows: 8, Cols: 64, Chunks: []F16Chunk{chunk(0, 8)}}, 1, buf.Whole(), "type Q8_0 is gathered on the host"},
		{EmbedTable{Type: model.TypeF16, Rows: 8, Cols: 63, Chunks: []F16Chunk{chunk(0, 8)}}, 1, buf.Whole(), "width 63 (even for 16-bit types)"},
		{EmbedTable{Type: model.TypeF16, Rows: 8, Cols: 64}, 1, buf.Whole(), "0 chunks"},
		{EmbedTable{Type: model.TypeF16, Rows: 8, Cols: 64, Chunks: []F16Chunk{chunk(0, 4), chunk(3, 5)}}, 1, buf.Whole(), "chunk 1 (rows 5 from 3"},
		{EmbedTable{Type: model.TypeF16, Rows: 8, Cols: 64, Chunks: []F16Chunk{chunk(0, 3), chunk(3, 5)}}, 1, buf.Whole(), "chunk 1 (rows 5 from 3"},
		{EmbedTable{Type: model.TypeF16, Rows: 8, Cols: 64, Chunks: []F16Chunk{chunk(0, 8)}}, 8, buf.Slice(0, 4*64*7), "operand 0 holds 1792 bytes, need 2048"},
	} {
		err := d.Run(func(s *gpu.Sequence) error { return ks.EmbedGather(s, &c.e, buf.Whole(), c.x, c.T) })
		require.ErrorContains(t, err, c.want)
	}
}

// TestGPUEmbeddingTypes: a model whose token_embd is F32 or BF16 (untied from an F16
// output.weight) gathers its input on the device from its own table, as stored, with the CPU's
// logits bit for bit (prefill and decode); the plan counts the table (4 or 2 bytes a value) and
// is what NewGPU allocates. A Q4_K table stays on the host (TestKQuantEmbeddingAndOutput runs
// it): no device table, and its plan has none.
func TestGPUEmbeddingTypes(t *testing.T) {
	dev := gputest.Open(t)
	base := synthModel(t, model.TypeI2_S, nil)
	embd := base.Tensors["token_embd.weight"]
	vals := make([]float32, embd.Elements())
	cols := int(embd.Shape[0])
	for r := 0; r < int(embd.Shape[1]); r++ {
		require.NoError(t, model.FloatRow(embd, r, vals[r*cols:(r+1)*cols]))
	}
	for _, typ := range []model.TensorType{model.TypeF32, model.TypeBF16} {
		t.Run(typ.String(), func(t *testing.T) {
			m := *base
			m.Tensors = map[string]*model.Tensor{}
			for k, v := range base.Tensors {
				m.Tensors[k] = v
			}
			var data []byte
			if typ == model.TypeF32 {
				data = make([]byte, 4*len(vals))
				for i, v := range vals {
					binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v*1.5)) // not the head's values
				}
			} else {
				data = make([]byte, 2*len(vals))
				for i, v := range vals {
					binary.LittleEndian.PutUint16(data[2*i:], model.F32ToBF16(v*1.5))
				}
			}
			m.Tensors["token_embd.weight"] = &model.Tensor{Name: embd.Name, Type: typ, Shape: embd.Shape, Data: data}
			m.Tensors["output.weight"] = &model.Tensor{Name: "output.weight", Type: model.TypeF16, Shape: embd.Shape, Data: embd.Data}
			m.Config.TiedEmbedding = false
			before := dev.Live()
			g, err := NewGPU(dev, &m, GPUOptions{Ctx: 64, LMHead: cpuref.LMHeadF16})
			require.NoError(t, err)
			after := dev.Live()
			require.NotNil(t, g.embd)
			require.Equal(t, typ, g.embd.Type)
			require.False(t, g.embdShared)
			plan := PlanMemoryHead(m.Config, 64, false, cpuref.LMHeadF16)
			plan.Weights += uint64(len(data)) - uint64(2*len(vals)) // the plan assumes an F16 table
			require.Equal(t, plan, g.Plan())
			require.Equal(t, plan.Total(), after.BufferBytes-before.BufferBytes)
			c, err := cpuref.New(&m, 64, cpuref.WithLMHead(cpuref.LMHeadF16))
			require.NoError(t, err)
			requireSameForward(t, c, g, []int{1, 72, 101, 108, 108, 111}, 3)
			require.NoError(t, g.Close())
		})
	}
	t.Run("q4_k", func(t *testing.T) {
		m := kquantModel(t)
		g, err := NewGPU(dev, m, GPUOptions{Ctx: 64, LMHead: cpuref.LMHeadQ8_0})
		require.NoError(t, err)
		defer g.Close()
		require.Nil(t, g.embd, "Q4_K rows are gathered on the host")
		plan := PlanMemoryHead(m.Config, 64, false, cpuref.LMHeadQ8_0)
		plan.Weights -= planEmbedBytes(m.Config, cpuref.LMHeadQ8_0)
		require.Equal(t, plan, g.Plan())
	})
}
