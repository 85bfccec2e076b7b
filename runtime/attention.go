//go:build cgo

package runtime

import (
	"fmt"
	"math"
	"sync"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/shaders"
)

// AttentionPosSlot is the step slot (Sequence.SetStep) from which the attention kernels read
// pos0, the absolute position of the batch's first query token. Query token t sits at position
// pos0+t and attends cache positions 0..pos0+t.
const AttentionPosSlot = 0

// AttentionMaxHeadDim is the largest head dimension the attention kernels accept. The key tile
// is fixed at attnChunk keys (it is the chunk of the canonical arithmetic), and the K and V tiles
// of head dimension d take attnChunk*(2d+8)*2 bytes of shared memory: 16.5 KiB at d = 128, which
// leaves room for 16 query rows within the 32 KiB the kernels budget (the smallest shared memory
// bitgpu targets), while d = 256 would need 32.5 KiB for K and V alone. 128 is also the head dimension of the BitNet b1.58 models.
const AttentionMaxHeadDim = 128

// attnChunk is the key tile of attention.comp and the chunk of cpuref.Attention's fold.
const attnChunk = cpuref.AttentionChunk

// AttentionArgs describes one attention call: T query tokens, H query heads of HeadDim
// dimensions, KVH key/value heads (grouped-query attention: query head h reads KV head
// h / (H/KVH)), and a KV cache of Ctx positions.
//
// Tensor layouts, all row-major and tightly packed:
//
//	q, out   f32 [T][H][HeadDim]
//	k, v     f16 [Ctx][KVH][HeadDim], two halves per uint32 word (packHalf2x16: the even
//	         dimension in the low 16 bits), i.e. K of position p, KV head g starts at word
//	         (p*KVH + g) * HeadDim/2; Ctx*KVH*HeadDim*2 bytes per cache
//
// Query token t sits at position pos0+t, pos0 read from step slot AttentionPosSlot when the
// sequence runs, and attends positions 0..pos0+t, which must be written (RoPE already applied to
// K) by then.
type AttentionArgs struct {
	T       uint32 // query tokens, >= 1
	H       uint32 // query heads, a positive multiple of KVH
	KVH     uint32 // key/value heads
	HeadDim uint32 // a multiple of 8, 8..AttentionMaxHeadDim (64 and 128 in practice)
	Ctx     uint32 // positions each cache holds (paged: each sequence's capacity)
	// Paged, when not nil, is the batched step of several sequences over a paged KV cache: query
	// token t sits at position meta[t] of its own sequence (not pos0+t) and attends its positions
	// 0..meta[t] through its block table (PagedRefs); k and v are then block pools
	// [blocks][32][KVH][HeadDim] f16 and a workgroup takes the heads of one token only.
	Paged *PagedRefs
}

// check returns an error naming op when the shape is invalid.
func (a AttentionArgs) check(op string) error {
	if a.H == 0 || a.KVH == 0 || a.H%a.KVH != 0 {
		return fmt.Errorf("%s: heads %d must be a positive multiple of kv heads %d", op, a.H, a.KVH)
	}
	if a.HeadDim == 0 || a.HeadDim%8 != 0 || a.HeadDim > AttentionMaxHeadDim {
		return fmt.Errorf("%s: head dim %d must be a multiple of 8 in 8..%d", op, a.HeadDim, AttentionMaxHeadDim)
	}
	if a.Ctx == 0 {
		return fmt.Errorf("%s: cache of 0 positions", op)
	}
	if a.T == 0 {
		return fmt.Errorf("%s: no query tokens", op)
	}
	return nil
}

// String gives the shape for error messages: "T=.. heads=.. kv heads=.. head dim=.. ctx=..".
func (a AttentionArgs) String() string {
	return fmt.Sprintf("T=%d heads=%d kv heads=%d head dim=%d ctx=%d", a.T, a.H, a.KVH, a.HeadDim, a.Ctx)
}

// cacheBytes is the size in bytes of one K or V cache: Ctx*KVH*HeadDim f16 (paged: one block,
// the least a pool holds; the block tables are the caller's to keep inside the pool).
func (a AttentionArgs) cacheBytes() uint64 {
	if a.Paged != nil {
		return PagedBlock * uint64(a.KVH) * uint64(a.HeadDim) * 2
	}
	return uint64(a.Ctx) * uint64(a.KVH) * uint64(a.HeadDim) * 2
}

// attnMaxSplits is the most key-range splits decode uses for a cache of ctx positions: one per
// 64 positions, at most 64 (the GPU policy; see AttentionKernels.DecodeSplits).
func attnMaxSplits(ctx uint32) uint32 {
	return min(max((ctx+63)/64, 1), 64)
}

// attnChunks is the number of key chunks of a cache of ctx positions: ceil(ctx/attnChunk).
func attnChunks(ctx uint32) uint32 {
	return (ctx + attnChunk - 1) / attnChunk
}

// attnPartialBytes is the size in bytes of the chunk partials of rows query rows (tokens times
// heads) of headDim dimensions over a cache of ctx positions: for each of the attnChunks(ctx)
// chunks, rows*headDim f32 chunk outputs o_c ([chunk][row][dim]), then, after all of those, one
// record (m_c, l_c, 0, 0) of 4 f32 per chunk and row ([chunk][row]).
func attnPartialBytes(rows, headDim, ctx uint32) uint64 {
	return uint64(attnChunks(ctx)) * uint64(rows) * (uint64(headDim) + 4) * 4
}

// AttentionScratchBytes is the size in bytes of the scratch decode (T = 1) needs for h query
// heads of headDim dimensions and a cache of ctx positions on any device: one partial per key
// chunk of 32 positions and head, ceil(ctx/32)*h*(headDim+4) f32 — the chunk outputs
// [chunk][head][headDim], then the records (max, sum, 0, 0) [chunk][head]. It is 0 when decode
// uses one split on every device (ctx <= 64: decode then writes the output directly and ignores
// scratch). Prefill needs no scratch.
func AttentionScratchBytes(h, headDim, ctx uint32) uint64 {
	if attnMaxSplits(ctx) == 1 {
		return 0
	}
	return attnPartialBytes(h, headDim, ctx)
}

// AttentionKernels records fused causal attention over an f16 KV cache whose output has exactly
// the bits of cpuref.Attention, for prefill and decode alike, on every conforming Vulkan device.
// Prefill is FlashAttention (Dao et al. 2022) in the FlashAttention-2 arrangement (Dao 2023): a
// workgroup owns a tile of query rows — the (token, query head) pairs of one KV head, so grouped
// heads share every K/V tile — and streams K/V tiles of 32 keys through shared memory with an
// online softmax (no T×T score matrix). Decode is flash-decoding (Dao et al. 2023): the 32-key
// chunks are dealt round-robin to workgroups that each write one partial (unnormalized output,
// max, sum) per chunk, and a second small pass folds them.
//
// Bit-exactness: a key tile is exactly one chunk of cpuref.Attention's canonical order (32
// positions aligned at 0). Each chunk's partial depends only on that chunk — scores by a fixed
// 8-way strided dot product and tree, the chunk maximum, weights from the canonical exp
// (cpuref.SoftmaxExp), sequential sums in key order — and the partials are folded in chunk order
// with the same operations whether the fold runs in registers during the stream or in the merge
// pass, so the split count and tile shape change the work distribution, never the arithmetic.
// The kernels use only correctly rounded f32 add, subtract and multiply, with every operation
// marked precise (no fused multiply-add), and shaders/numerics.glsl's exp and reciprocal in place
// of the implementation-defined built-ins.
//
// Pipelines are specialized per head dimension and tile shape and built on first use; the tile
// shapes are chosen to fit the device's shared memory (every shape fits 32 KiB) and workgroup
// limits. Only shared memory is used — no subgroup operations, 16-bit storage or f16
// arithmetic — so the kernels run on every Vulkan 1.1 device. AttentionKernels is safe for
// concurrent use; Release it (or close the device) when done.
type AttentionKernels struct {
	dev       *gpu.Device
	cpuSplits bool // split decode as for a CPU device (few splits)

	mu      sync.Mutex
	kernels map[attnKey]*gpu.Kernel
}

// attnKey identifies one specialized pipeline: the main kernel with its head dimension and tile
// shape (rows per workgroup, workgroup size), or the merge kernel (all zero).
type attnKey struct {
	merge    bool
	hd, rows uint32
	wg       uint32
}

// attnTile is a tile shape of attention.comp: rows query rows per workgroup of wg threads
// (wg/rows threads per row, a divisor of the 32 keys of a tile).
type attnTile struct{ rows, wg uint32 }

// NewAttentionKernels returns the attention kernels of dev; pipelines are built when first
// recorded.
func NewAttentionKernels(dev *gpu.Device) *AttentionKernels {
	return &AttentionKernels{dev: dev, cpuSplits: dev.Info().Type == "cpu", kernels: map[attnKey]*gpu.Kernel{}}
}

// DecodeSplits is the number of key-range splits (flash-decoding workgroups per KV head) Decode
// records for a cache of ctx positions; split z takes the 32-key chunks z, z+S, z+2S, ... On a
// GPU it is ceil(ctx/64), at most 64, so that even a few KV heads fill the device at long
// contexts; on a CPU device (lavapipe, SwiftShader), whose few cores are already busy with the KV
// heads and where every workgroup costs, it is ceil(ctx/512), at most 4. It depends only on ctx
// and the device, never on the position, so a recorded decode step stays valid as the position
// grows; splits beyond the chunks a position reaches do no work. It changes only how the work is
// spread: the output bits are the same for every split count.
func (a *AttentionKernels) DecodeSplits(ctx uint32) uint32 {
	if a.cpuSplits {
		return min(max((ctx+511)/512, 1), 4)
	}
	return attnMaxSplits(ctx)
}

// Release destroys the pipelines built so far. The AttentionKernels may be used again after
// (pipelines are rebuilt on demand).
func (a *AttentionKernels) Release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range a.kernels {
		k.Release()
	}
	a.kernels = map[attnKey]*gpu.Kernel{}
}

// attnShared is the shared memory attention.comp declares for a tile shape, in bytes: query rows
// and K rows padded by one 16-byte vector, V rows, the score and weight tiles.
func attnShared(hd uint32, t attnTile) uint32 {
	return t.rows*(hd/4+1)*16 + attnChunk*(hd/8+1)*16 + attnChunk*(hd/8)*16 + 2*t.rows*attnChunk*4
}

// fits reports whether tile shape t is valid for head dim hd on the device: the workgroup within
// limits, whole threads per row dividing the 32 keys of a tile, and the shared memory within both
// the device limit and 32 KiB (the smallest bitgpu targets).
func (a *AttentionKernels) fits(hd uint32, t attnTile) bool {
	info := a.dev.Info()
	if t.wg == 0 || t.rows == 0 || t.wg%t.rows != 0 || t.wg > info.MaxWorkgroupInvocations || t.wg > info.MaxWorkgroupSize[0] {
		return false
	}
	if attnChunk%(t.wg/t.rows) != 0 {
		return false
	}
	lim := min(info.MaxSharedMemory, 32<<10)
	return attnShared(hd, t) <= lim
}

// prefillTile picks the tile shape of Prefill for head dim hd: the most query rows that fit (more
// rows means fewer re-reads of K/V), 8 or 16 threads per row.
func (a *AttentionKernels) prefillTile(hd uint32) (attnTile, error) {
	for _, t := range []attnTile{{32, 256}, {16, 256}, {16, 128}, {8, 128}, {8, 64}, {4, 32}} {
		if a.fits(hd, t) {
			return t, nil
		}
	}
	return attnTile{}, fmt.Errorf("attention prefill: no tile shape for head dim %d fits the device (%d bytes shared memory, %d invocations)", hd, a.dev.Info().MaxSharedMemory, a.dev.Info().MaxWorkgroupInvocations)
}

// decodeTile picks the tile shape of Decode for head dim hd and group size G = H/KVH: the
// workgroup takes all G heads of one KV head (at most 8) for one token, with about one thread per
// output octet (8 dimensions) of a head — a power of two from 4 to 32, raised so the workgroup
// has at least 32 threads (fewer if the device does not allow that many).
func (a *AttentionKernels) decodeTile(hd, group uint32) (attnTile, error) {
	rows := min(group, 8)
	tpr := uint32(4)
	for tpr < 32 && (2*tpr <= hd/8 || rows*tpr < 32) {
		tpr *= 2
	}
	for ; tpr >= 1; tpr /= 2 {
		if t := (attnTile{rows: rows, wg: rows * tpr}); a.fits(hd, t) {
			return t, nil
		}
	}
	return attnTile{}, fmt.Errorf("attention decode: no tile shape for head dim %d and %d heads per KV head fits the device (%d bytes shared memory, %d invocations)", hd, group, a.dev.Info().MaxSharedMemory, a.dev.Info().MaxWorkgroupInvocations)
}

// kernel returns the pipeline for key, building it on first use.
func (a *AttentionKernels) kernel(key attnKey) (*gpu.Kernel, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if k, ok := a.kernels[key]; ok {
		return k, nil
	}
	var spec gpu.KernelSpec
	if key.merge {
		code, err := shaders.SPIRV("attention_merge")
		if err != nil {
			return nil, err
		}
		spec = gpu.KernelSpec{Name: "attention_merge", SPIRV: code, Bindings: 3, Outputs: []int{1}, PushSize: 28, LocalSize: [2]uint32{32, 1}}
	} else {
		code, err := shaders.SPIRV("attention")
		if err != nil {
			return nil, err
		}
		spec = gpu.KernelSpec{
			Name:      fmt.Sprintf("attention(hd=%d,rows=%d,threads=%d)", key.hd, key.rows, key.wg),
			SPIRV:     code,
			Bindings:  5,
			Outputs:   []int{3},
			PushSize:  44,
			LocalSize: [2]uint32{key.wg, 1},
			Spec:      []uint32{key.hd, key.rows},
		}
	}
	k, err := a.dev.NewKernel(spec)
	if err != nil {
		return nil, err
	}
	a.kernels[key] = k
	return k, nil
}

// attnRange is an operand, its range, and the bytes the shape needs there.
type attnRange struct {
	what string
	r    gpu.Range
	need uint64
}

// attnCheckRanges returns an error naming op, the first operand too small and the shape.
func attnCheckRanges(op string, args AttentionArgs, rs ...attnRange) error {
	for _, c := range rs {
		if c.r.Size < c.need {
			return fmt.Errorf("%s: %s holds %d bytes, need %d for %v", op, c.what, c.r.Size, c.need, args)
		}
	}
	return nil
}

// checkOperands validates args and the q, cache and out ranges of op.
func (args AttentionArgs) checkOperands(op string, q, kCache, vCache, out gpu.Range) error {
	if err := args.check(op); err != nil {
		return err
	}
	qBytes := uint64(args.T) * uint64(args.H) * uint64(args.HeadDim) * 4
	return attnCheckRanges(op, args, attnRange{"q", q, qBytes}, attnRange{"k cache", kCache, args.cacheBytes()},
		attnRange{"v cache", vCache, args.cacheBytes()}, attnRange{"out", out, qBytes})
}

// attnScale is 1/sqrt(hd) rounded to f32, as cpuref.Attention computes it.
func attnScale(hd uint32) float32 { return float32(1 / math.Sqrt(float64(hd))) }

// attnMLOffset is the vec4 index of the first (m_c, l_c, 0, 0) record in the chunk partials of
// args (attnPartialBytes): after the ceil(Ctx/32) * T*H * HeadDim f32 chunk outputs.
func attnMLOffset(args AttentionArgs) uint32 {
	return attnChunks(args.Ctx) * args.T * args.H * (args.HeadDim / 4)
}

// dispatchMain records attention.comp with the given tile shape and split count: splits 1
// writes the normalized output to out, more write the chunk partials (attnPartialBytes of
// T*H rows) to out for dispatchMerge.
func (a *AttentionKernels) dispatchMain(s *gpu.Sequence, args AttentionArgs, tile attnTile, splits uint32, q, kCache, vCache, out gpu.Range) error {
	k, err := a.kernel(attnKey{hd: args.HeadDim, rows: tile.rows, wg: tile.wg})
	if err != nil {
		return err
	}
	group := args.H / args.KVH
	rowTiles := uint32((uint64(args.T)*uint64(group) + uint64(tile.rows) - 1) / uint64(tile.rows))
	if args.Paged != nil { // workgroups of one token each
		rowTiles = args.T * ((group + tile.rows - 1) / tile.rows)
	}
	mlOff := uint32(0) // unused when the kernel folds in registers
	if splits > 1 {
		mlOff = attnMLOffset(args)
	}
	push := []uint32{args.T, args.H, args.KVH, args.Ctx, splits, AttentionPosSlot, gpu.F32(attnScale(args.HeadDim)), mlOff}
	push, meta := args.Paged.push(push, q)
	return s.Dispatch(k, [3]uint32{rowTiles, args.KVH, splits}, push, q, kCache, vCache, out, meta)
}

// dispatchMerge records attention_merge.comp: it folds the chunk partials in scratch (written by
// dispatchMain with splits > 1) in chunk order into the normalized output out, for every query
// row of args at the position in step slot AttentionPosSlot.
func (a *AttentionKernels) dispatchMerge(s *gpu.Sequence, args AttentionArgs, scratch, out gpu.Range) error {
	merge, err := a.kernel(attnKey{merge: true})
	if err != nil {
		return err
	}
	rows := args.T * args.H
	push := []uint32{rows, args.H, args.HeadDim / 4, attnMLOffset(args), args.Ctx, AttentionPosSlot, 0}
	meta := scratch // unread without paging
	if args.Paged != nil {
		push[6], meta = 1, args.Paged.Meta
	}
	return s.Dispatch(merge, [3]uint32{rows, 1, 1}, push, scratch, out, meta)
}

// Attention records causal attention for args.T query tokens: Decode when T is 1, Prefill
// otherwise, Paged with args.Paged. scratch must hold AttentionScratchBytes(H, HeadDim, Ctx) bytes
// when T is 1 (PagedScratchBytes with args.Paged; it is ignored otherwise, and when that size is
// 0). Errors are those of Prefill, Decode and Paged.
func (a *AttentionKernels) Attention(s *gpu.Sequence, q, kCache, vCache, out, scratch gpu.Range, args AttentionArgs) error {
	if args.Paged != nil {
		return a.Paged(s, q, kCache, vCache, out, scratch, args)
	}
	if args.T == 1 {
		return a.Decode(s, q, kCache, vCache, out, scratch, args)
	}
	return a.Prefill(s, q, kCache, vCache, out, args)
}

// Prefill records causal attention for args.T query tokens at positions pos0..pos0+T-1 in one
// pass: out[t][h] = Σ_j softmax_j((q[t][h]·k_j) * 1/sqrt(HeadDim)) v_j over positions
// j = 0..pos0+t of KV head h/(H/KVH), layouts as in AttentionArgs, with exactly the bits of
// cpuref.Attention for each token (its canonical order: 32-key chunks, each reduced to a partial
// and folded in order). The softmax is online over K/V tiles of one chunk each (FlashAttention,
// Dao et al. 2022; FlashAttention-2, Dao 2023), so a token gets the same bits from Prefill as
// from Decode at its position. A query whose position reaches Ctx sees only the first Ctx keys:
// the kernel never reads past the cache. out must not overlap the caches. Errors name the op and
// the sizes: a bad shape, T of 0, or a range too small for the shape.
func (a *AttentionKernels) Prefill(s *gpu.Sequence, q, kCache, vCache, out gpu.Range, args AttentionArgs) error {
	const op = "attention prefill"
	if err := args.checkOperands(op, q, kCache, vCache, out); err != nil {
		return err
	}
	tile, err := a.prefillTile(args.HeadDim)
	if err != nil {
		return err
	}
	return a.dispatchMain(s, args, tile, 1, q, kCache, vCache, out)
}

// Decode records causal attention for one query token (args.T must be 1) at position pos0,
// attending positions 0..pos0, layouts as in AttentionArgs, with exactly the bits of
// cpuref.Attention. It is split-K attention (flash-decoding, Dao et al. 2023): with S =
// DecodeSplits(Ctx) > 1, workgroup z of each KV head computes the partials (chunk output, max,
// sum) of the 32-key chunks z, z+S, ... that pos0 reaches and writes them to scratch, then a
// merge pass folds the ceil((pos0+1)/32) partials in chunk order and writes out; with S = 1 one
// workgroup streams the chunks and folds them in registers. Both give the same bits. Nothing
// recorded depends on pos0, so the sequence can be replayed with SetStep(AttentionPosSlot, pos)
// as the position grows (up to Ctx-1). scratch must hold AttentionScratchBytes(H, HeadDim, Ctx)
// bytes (ignored when that is 0) and must not overlap the other ranges. Errors name the op and
// the sizes: a bad shape, T other than 1, or a range too small for the shape.
func (a *AttentionKernels) Decode(s *gpu.Sequence, q, kCache, vCache, out, scratch gpu.Range, args AttentionArgs) error {
	const op = "attention decode"
	if args.T != 1 {
		return fmt.Errorf("%s: %d query tokens, decode takes 1", op, args.T)
	}
	if err := args.checkOperands(op, q, kCache, vCache, out); err != nil {
		return err
	}
	splits := a.DecodeSplits(args.Ctx)
	if need := AttentionScratchBytes(args.H, args.HeadDim, args.Ctx); need > 0 {
		if err := attnCheckRanges(op, args, attnRange{"scratch", scratch, need}); err != nil {
			return err
		}
	}
	tile, err := a.decodeTile(args.HeadDim, args.H/args.KVH)
	if err != nil {
		return err
	}
	if splits == 1 {
		return a.dispatchMain(s, args, tile, 1, q, kCache, vCache, out)
	}
	if err := a.dispatchMain(s, args, tile, splits, q, kCache, vCache, scratch); err != nil {
		return err
	}
	return a.dispatchMerge(s, args, scratch, out)
}

// PagedSplitTokens is the most tokens a paged attention step splits over key ranges; wider steps
// (prefill chunks) fold in registers, so the scratch stays PagedScratchBytes.
const PagedSplitTokens = 16

// pagedSplits is the split count of a paged step of t tokens over sequences of ctx positions.
func (a *AttentionKernels) pagedSplits(t, ctx uint32) uint32 {
	if t > PagedSplitTokens {
		return 1
	}
	return a.DecodeSplits(ctx)
}

// PagedScratchBytes is the scratch Paged needs for h query heads of headDim dimensions and
// sequences of ctx positions on any device: the chunk partials of PagedSplitTokens tokens, 0 when
// ctx needs no split (as AttentionScratchBytes).
func PagedScratchBytes(h, headDim, ctx uint32) uint64 {
	if attnMaxSplits(ctx) == 1 {
		return 0
	}
	return attnPartialBytes(PagedSplitTokens*h, headDim, ctx)
}

// Paged records attention for args.T query tokens of different sequences over a paged KV cache
// (args.Paged, required): token t attends positions 0..meta[t] of its own sequence through its
// block table, with exactly cpuref.Attention's bits for that sequence — the chunks are the blocks,
// so only the addresses differ from Decode and Prefill. kPool and vPool are the block pools
// ([blocks][32][KVH][HeadDim] f16); every block a table names must be inside them and every
// position meta[t] below args.Ctx (PagedKV keeps both). Up to PagedSplitTokens tokens split the
// key range as Decode does (scratch: PagedScratchBytes), more fold in registers. Errors name the
// op and the sizes: no Paged, a bad shape or a range too small.
func (a *AttentionKernels) Paged(s *gpu.Sequence, q, kPool, vPool, out, scratch gpu.Range, args AttentionArgs) error {
	const op = "attention paged"
	if args.Paged == nil {
		return fmt.Errorf("%s: no block tables", op)
	}
	if err := args.checkOperands(op, q, kPool, vPool, out); err != nil {
		return err
	}
	tile, err := a.decodeTile(args.HeadDim, args.H/args.KVH)
	if err != nil {
		return err
	}
	splits := a.pagedSplits(args.T, args.Ctx)
	if splits == 1 {
		return a.dispatchMain(s, args, tile, 1, q, kPool, vPool, out)
	}
	if err := attnCheckRanges(op, args, attnRange{"scratch", scratch, attnPartialBytes(args.T*args.H, args.HeadDim, args.Ctx)}); err != nil {
		return err
	}
	if err := a.dispatchMain(s, args, tile, splits, q, kPool, vPool, scratch); err != nil {
		return err
	}
	return a.dispatchMerge(s, args, scratch, out)
}
