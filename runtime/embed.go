//go:build cgo

package runtime

import (
	"fmt"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
)

// EmbedGatherMaxChunks is how many row chunks of an EmbedTable one embed_gather dispatch binds
// (embed_gather.comp's e0..e7); a table of more chunks takes one dispatch per 8.
const EmbedGatherMaxChunks = 8

func init() {
	kernelDefs = append(kernelDefs, kernelDef{name: "embed_gather", variants: []variant{{spv: "embed_gather"}}, bindings: 2 + EmbedGatherMaxChunks, outputs: []int{1}, push: 28})
}

// EmbedTable is a token-embedding matrix on the device for EmbedGather: Rows rows (the
// vocabulary) of Cols values of Type (model.TypeF16, TypeF32 or TypeBF16) in the file's
// encoding, row-major, split into row chunks that each fit one storage-buffer binding. Every
// chunk but the last has Chunks[0].Rows rows (F16Chunk is a plain row chunk here, whatever the
// type).
type EmbedTable struct {
	Name       string
	Type       model.TensorType
	Rows, Cols uint32
	Chunks     []F16Chunk
}

// embedGatherType is embed_gather.comp's type code of t, and whether the device gathers t at all
// (the block-quantized types Q8_0, Q4_K and Q6_K are gathered on the host).
func embedGatherType(t model.TensorType) (uint32, bool) {
	switch t {
	case model.TypeF16:
		return 0, true
	case model.TypeF32:
		return 1, true
	case model.TypeBF16:
		return 2, true
	}
	return 0, false
}

// embedElemBytes is the bytes a value of t takes in an EmbedTable (0: not gathered on the device).
func embedElemBytes(t model.TensorType) uint64 {
	switch t {
	case model.TypeF16, model.TypeBF16:
		return 2
	case model.TypeF32:
		return 4
	}
	return 0
}

// deviceEmbedBytes is the device memory the token-embedding table (vocab x dim values of typ)
// takes for EmbedGather: none when shared (the F16 LM head holds the same table: tied embedding,
// --lm-head f16) or when the host gathers the type (Q8_0, Q4_K, Q6_K); else the table as stored.
func deviceEmbedBytes(typ model.TensorType, vocab, dim int, shared bool) uint64 {
	if shared {
		return 0
	}
	return uint64(vocab) * uint64(dim) * embedElemBytes(typ)
}

// EmbedGather records x[t][i] = float32(E[tokens[t]][i]) for T tokens: tokens holds T uint32 ids
// (each < e.Rows, which the caller checks: a larger id leaves its row of x unwritten), x gets T
// rows of e.Cols f32 values — model.FloatRow's bits exactly (F16 widened exactly, BF16 shifted,
// F32 copied). One dispatch per EmbedGatherMaxChunks chunks of e.
func (ks *Kernels) EmbedGather(s *gpu.Sequence, e *EmbedTable, tokens, x gpu.Range, T uint32) error {
	typ, ok := embedGatherType(e.Type)
	switch {
	case !ok:
		return fmt.Errorf("embed_gather %s: type %s is gathered on the host", e.Name, e.Type)
	case T == 0 || len(e.Chunks) == 0 || e.Cols == 0 || (typ != 1 && e.Cols%2 != 0):
		return fmt.Errorf("embed_gather %s: %d tokens, %d chunks, width %d (even for 16-bit types)", e.Name, T, len(e.Chunks), e.Cols)
	}
	per := e.Chunks[0].Rows
	for i, c := range e.Chunks {
		last := i == len(e.Chunks)-1
		if c.Row0 != uint32(i)*per || c.Rows == 0 || c.Rows > per || (!last && c.Rows != per) || (last && c.Row0+c.Rows != e.Rows) ||
			c.Buf.Size < uint64(c.Rows)*uint64(e.Cols)*embedElemBytes(e.Type) {
			return fmt.Errorf("embed_gather %s: chunk %d (rows %d from %d, %d bytes) breaks the layout of %d-row chunks over %d rows", e.Name, i, c.Rows, c.Row0, c.Buf.Size, per, e.Rows)
		}
	}
	if err := checkLen("embed_gather "+e.Name, T, tokens); err != nil {
		return err
	}
	if err := checkLen("embed_gather "+e.Name, T*e.Cols, x); err != nil {
		return err
	}
	k, err := ks.kernel("embed_gather")
	if err != nil {
		return err
	}
	for c0 := 0; c0 < len(e.Chunks); c0 += EmbedGatherMaxChunks {
		n := min(EmbedGatherMaxChunks, len(e.Chunks)-c0)
		bufs := []gpu.Range{tokens, x}
		for j := 0; j < EmbedGatherMaxChunks; j++ {
			bufs = append(bufs, e.Chunks[c0+min(j, n-1)].Buf) // unused slots repeat a bound chunk
		}
		push := []uint32{e.Cols, T, typ, e.Rows, per, uint32(c0), uint32(n)}
		if err := s.Dispatch(k, [3]uint32{(e.Cols + 255) / 256, T, 1}, push, bufs...); err != nil {
			return err
		}
	}
	return nil
}

// uploadRows copies the rows x cols matrix t (rowBytes bytes a row, its encoding as is) to the
// device in row chunks no larger than the device's maxStorageBufferRange (capped at 1 GiB), every
// chunk but the last of the same rows. On an error, or a fault reading the memory-mapped tensor
// (a panic model.CatchFault turns into an error), it releases the chunks it allocated.
func (g *GPU) uploadRows(t *model.Tensor, rows int, rowBytes uint64) ([]F16Chunk, error) {
	if uint64(len(t.Data)) < rowBytes*uint64(rows) {
		return nil, fmt.Errorf("tensor %s: %d bytes, want %d", t.Name, len(t.Data), rowBytes*uint64(rows))
	}
	limit := min(g.dev.Info().MaxStorageBufferRange, 1<<30)
	per := max(uint64(1), limit/rowBytes)
	var chunks []F16Chunk
	done := false
	defer func() {
		if !done {
			for _, c := range chunks {
				c.Buf.Buf.Release()
			}
		}
	}()
	for r0 := uint64(0); r0 < uint64(rows); r0 += per {
		n := min(per, uint64(rows)-r0)
		b, err := g.dev.NewBuffer(n * rowBytes)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
		}
		chunks = append(chunks, F16Chunk{Row0: uint32(r0), Rows: uint32(n), Buf: b.Whole()})
		if err := b.Upload(0, t.Data[r0*rowBytes:(r0+n)*rowBytes]); err != nil {
			return nil, err
		}
	}
	done = true
	return chunks, nil
}

// uploadEmbedding puts the token-embedding table embd on the device for EmbedGather (g.embd), so
// a step's input crosses the bus as token ids: it reuses the F16 LM head's chunks when head (the
// tensor g.out was uploaded from) is embd itself, else uploads embd (F16, F32 or BF16 as stored).
// A block-quantized embd (Q8_0, Q4_K, Q6_K) stays on the host: g.embd stays nil and GPU.embed
// gathers and uploads the rows (4·dim bytes a token).
func (g *GPU) uploadEmbedding(embd, head *model.Tensor) error {
	if _, ok := embedGatherType(embd.Type); !ok {
		return nil
	}
	c := &g.cfg
	if len(embd.Shape) != 2 || embd.Shape[0] != uint64(c.Dim) || embd.Shape[1] != uint64(c.VocabSize) {
		return fmt.Errorf("tensor %s: shape %v, want [%d, %d]", embd.Name, embd.Shape, c.Dim, c.VocabSize)
	}
	e := &EmbedTable{Name: embd.Name, Type: embd.Type, Rows: uint32(c.VocabSize), Cols: uint32(c.Dim)}
	if g.out != nil && head == embd && embd.Type == model.TypeF16 {
		e.Chunks = g.out.Chunks // the tied F16 head: the same table, no second copy
		g.embd, g.embdShared = e, true
		return nil
	}
	chunks, err := g.uploadRows(embd, c.VocabSize, uint64(c.Dim)*embedElemBytes(embd.Type))
	if err != nil {
		return err
	}
	e.Chunks = chunks
	g.embd = e
	return nil
}
