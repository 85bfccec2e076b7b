package runtime

import (
	"fmt"
	"math"
	"sync"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/shaders"
)

// AttentionPosSlot is the step slot (Sequence.SetStep) from which the attention kernels read
// pos0, the absolute position of the batch's first query token. Query token t sits at position
// pos0+t and attends cache positions 0..pos0+t.
const AttentionPosSlot = 0

// AttentionMaxHeadDim is the largest head dimension the attention kernels accept.
const AttentionMaxHeadDim = 256

// attentionMaxSplits bounds the split-K factor of decode (attention_merge.comp's MAX_SPLITS).
const attentionMaxSplits = 256

// AttentionShape describes one layer's attention: Heads query heads of HeadDim dimensions,
// KVHeads key/value heads (grouped-query attention: query head h reads KV head
// h / (Heads/KVHeads)), and a KV cache of Ctx positions.
//
// Tensor layouts, all row-major and tightly packed:
//
//	q, out   f32 [T][Heads][HeadDim]
//	k, v     f16 [Ctx][KVHeads][HeadDim], two halves per uint32 word (packHalf2x16: the even
//	         dimension in the low 16 bits), i.e. K of position p, KV head g starts at word
//	         (p*KVHeads + g) * HeadDim/2; Ctx*KVHeads*HeadDim*2 bytes per cache
//
// RoPE must already be applied to the keys in the cache.
type AttentionShape struct {
	Heads   uint32 // query heads H, a positive multiple of KVHeads
	KVHeads uint32 // key/value heads
	HeadDim uint32 // even, 2..AttentionMaxHeadDim (64 and 128 in practice)
	Ctx     uint32 // positions each cache holds
}

func (sh AttentionShape) check(op string) error {
	if sh.Heads == 0 || sh.KVHeads == 0 || sh.Heads%sh.KVHeads != 0 {
		return fmt.Errorf("%s: heads %d must be a positive multiple of kv heads %d", op, sh.Heads, sh.KVHeads)
	}
	if sh.HeadDim == 0 || sh.HeadDim%2 != 0 || sh.HeadDim > AttentionMaxHeadDim {
		return fmt.Errorf("%s: head dim %d must be even and in 2..%d", op, sh.HeadDim, AttentionMaxHeadDim)
	}
	if sh.Ctx == 0 {
		return fmt.Errorf("%s: cache of 0 positions", op)
	}
	return nil
}

// CacheBytes is the size in bytes of one K or V cache of the shape: Ctx*KVHeads*HeadDim f16.
func (sh AttentionShape) CacheBytes() uint64 {
	return uint64(sh.Ctx) * uint64(sh.KVHeads) * uint64(sh.HeadDim) * 2
}

// DecodeSplits is the number of key-range splits Decode uses (flash-decoding): ceil(Ctx/64),
// at most 64. It depends only on Ctx, never on the position, so a recorded decode step stays
// valid as the position grows; splits beyond the keys the position reaches do no work.
func (sh AttentionShape) DecodeSplits() uint32 {
	s := (sh.Ctx + 63) / 64
	return min(max(s, 1), 64)
}

// DecodeScratchBytes is the size in bytes of the scratch Decode needs: for S = DecodeSplits()
// splits, S*Heads*HeadDim f32 partial outputs and S*Heads (max, sum) f32 pairs; 0 when S is 1
// (Decode then writes the output directly and ignores scratch).
func (sh AttentionShape) DecodeScratchBytes() uint64 {
	s := uint64(sh.DecodeSplits())
	if s == 1 {
		return 0
	}
	return s * uint64(sh.Heads) * (uint64(sh.HeadDim) + 2) * 4
}

// AttentionKernels records fused causal attention over an f16 KV cache. Prefill is
// FlashAttention (Dao et al. 2022) in the FlashAttention-2 arrangement (Dao 2023): a workgroup
// owns a tile of query rows — the (token, query head) pairs of one KV head, so grouped heads
// share every K/V tile — and streams K/V tiles through shared memory with an online softmax
// (running max and sum, one pass, no T×T score matrix). Decode is flash-decoding (Dao et al.
// 2023): the keys are split across workgroups that each write a partial (unnormalized output,
// max, sum), and a second small pass merges them.
//
// Pipelines are specialized per head dimension and tile shape and built on first use; the tile
// shapes are chosen to fit the device's shared memory (every shape fits 32 KiB) and workgroup
// limits. Only shared memory is used — no subgroup operations, 16-bit storage or f16
// arithmetic — so the kernels run on every Vulkan 1.1 device. AttentionKernels is safe for
// concurrent use; Release it (or close the device) when done.
type AttentionKernels struct {
	dev *gpu.Device

	mu      sync.Mutex
	kernels map[attnKey]*gpu.Kernel
}

// attnKey identifies one specialized pipeline: the main kernel with its head dimension and tile
// shape (rows per workgroup, keys per tile, workgroup size), or the merge kernel (all zero).
type attnKey struct {
	merge        bool
	hd, rows, bc uint32
	wg           uint32
}

// attnTile is a tile shape of attention.comp: ROWS query rows per workgroup of WG threads,
// BC keys per tile.
type attnTile struct{ rows, bc, wg uint32 }

// NewAttentionKernels returns the attention kernels of dev; pipelines are built when first
// recorded.
func NewAttentionKernels(dev *gpu.Device) *AttentionKernels {
	return &AttentionKernels{dev: dev, kernels: map[attnKey]*gpu.Kernel{}}
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

// attnShared is the shared memory attention.comp declares for a tile shape, in bytes (query rows
// as f32 pairs and K rows padded by one word, V rows, the score tile).
func attnShared(hd uint32, t attnTile) uint32 {
	pairs := hd / 2
	return t.rows*(pairs+1)*8 + t.bc*(pairs+1)*4 + t.bc*pairs*4 + t.rows*t.bc*4
}

// fits reports whether tile shape t is valid for head dim hd on the device: the workgroup within
// limits, whole threads per row, BC a multiple of them, and the shared memory within both the
// device limit and 32 KiB (the smallest bitgpu targets).
func (a *AttentionKernels) fits(hd uint32, t attnTile) bool {
	info := a.dev.Info()
	if t.wg == 0 || t.rows == 0 || t.wg%t.rows != 0 || t.wg > info.MaxWorkgroupInvocations || t.wg > info.MaxWorkgroupSize[0] {
		return false
	}
	tpr := t.wg / t.rows
	if t.bc%tpr != 0 {
		return false
	}
	lim := min(info.MaxSharedMemory, 32<<10)
	return attnShared(hd, t) <= lim
}

// prefillTile picks the tile shape of Prefill for head dim hd: the most query rows and keys per
// tile that fit (more rows means fewer re-reads of K/V, more keys fewer barriers).
func (a *AttentionKernels) prefillTile(hd uint32) (attnTile, error) {
	for _, t := range []attnTile{{32, 32, 256}, {32, 16, 256}, {16, 16, 256}, {8, 16, 128}, {8, 8, 64}, {4, 8, 32}, {4, 4, 16}} {
		if a.fits(hd, t) {
			return t, nil
		}
	}
	return attnTile{}, fmt.Errorf("attention prefill: no tile shape for head dim %d fits the device (%d bytes shared memory, %d invocations)", hd, a.dev.Info().MaxSharedMemory, a.dev.Info().MaxWorkgroupInvocations)
}

// decodeTile picks the tile shape of Decode for head dim hd and group size G = H/KVH: the
// workgroup takes all G heads of one KV head (at most 8) for one token, 32 (or 16, 8, 4) threads
// per head, one key per thread per tile.
func (a *AttentionKernels) decodeTile(hd, group uint32) (attnTile, error) {
	rows := min(group, 8)
	for _, tpr := range []uint32{32, 16, 8, 4} {
		t := attnTile{rows: rows, bc: tpr, wg: rows * tpr}
		if a.fits(hd, t) {
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
		spec = gpu.KernelSpec{Name: "attention_merge", SPIRV: code, Bindings: 2, Outputs: []int{1}, PushSize: 16, LocalSize: [2]uint32{64, 1}}
	} else {
		code, err := shaders.SPIRV("attention")
		if err != nil {
			return nil, err
		}
		spec = gpu.KernelSpec{
			Name:      fmt.Sprintf("attention(hd=%d,rows=%d,keys=%d)", key.hd, key.rows, key.bc),
			SPIRV:     code,
			Bindings:  4,
			Outputs:   []int{3},
			PushSize:  32,
			LocalSize: [2]uint32{key.wg, 1},
			Spec:      []uint32{key.hd, key.rows, key.bc},
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
func attnCheckRanges(op, shape string, rs ...attnRange) error {
	for _, c := range rs {
		if c.r.Size < c.need {
			return fmt.Errorf("%s: %s holds %d bytes, need %d for %s", op, c.what, c.r.Size, c.need, shape)
		}
	}
	return nil
}

// attnScale is 1/sqrt(hd) rounded to f32, as cpuref.Attention computes it.
func attnScale(hd uint32) float32 { return float32(1 / math.Sqrt(float64(hd))) }

// dispatchMain records attention.comp for T tokens with the given tile shape and split count.
func (a *AttentionKernels) dispatchMain(s *gpu.Sequence, sh AttentionShape, T uint32, tile attnTile, splits uint32, q, kCache, vCache, out gpu.Range) error {
	k, err := a.kernel(attnKey{hd: sh.HeadDim, rows: tile.rows, bc: tile.bc, wg: tile.wg})
	if err != nil {
		return err
	}
	group := sh.Heads / sh.KVHeads
	rowTiles := uint32((uint64(T)*uint64(group) + uint64(tile.rows) - 1) / uint64(tile.rows))
	mlOff := splits * T * sh.Heads * (sh.HeadDim / 2) // vec2 index of the (m, l) pairs
	push := []uint32{T, sh.Heads, sh.KVHeads, sh.Ctx, splits, AttentionPosSlot, gpu.F32(attnScale(sh.HeadDim)), mlOff}
	return s.Dispatch(k, [3]uint32{rowTiles, sh.KVHeads, splits}, push, q, kCache, vCache, out)
}

// Prefill records causal attention for T query tokens at positions pos0..pos0+T-1, pos0 read
// from step slot AttentionPosSlot when the sequence runs: out[t][h] = softmax over keys
// 0..pos0+t of (q[t][h]·k * 1/sqrt(HeadDim)) applied to v, with KV head h/(Heads/KVHeads).
// Shapes and layouts are those of AttentionShape: q and out f32 [T][Heads][HeadDim], kCache and
// vCache f16 [Ctx][KVHeads][HeadDim]; positions 0..pos0+T-1 must be written (and RoPE applied to
// K) before the sequence runs. A query whose position reaches Ctx sees only the first Ctx keys
// (the kernel never reads past the cache). Softmax runs in f32 with max subtraction, one pass
// over K/V tiles (FlashAttention, Dao et al. 2022; FlashAttention-2, Dao 2023). out must not
// overlap the caches. Errors name the op and the sizes: a bad shape, T of 0, or a range too
// small for the shape.
func (a *AttentionKernels) Prefill(s *gpu.Sequence, sh AttentionShape, T uint32, q, kCache, vCache, out gpu.Range) error {
	const op = "attention prefill"
	if err := sh.check(op); err != nil {
		return err
	}
	if T == 0 {
		return fmt.Errorf("%s: no query tokens", op)
	}
	shape := fmt.Sprintf("T=%d heads=%d kv heads=%d head dim=%d ctx=%d", T, sh.Heads, sh.KVHeads, sh.HeadDim, sh.Ctx)
	qBytes := uint64(T) * uint64(sh.Heads) * uint64(sh.HeadDim) * 4
	if err := attnCheckRanges(op, shape, attnRange{"q", q, qBytes}, attnRange{"k cache", kCache, sh.CacheBytes()},
		attnRange{"v cache", vCache, sh.CacheBytes()}, attnRange{"out", out, qBytes}); err != nil {
		return err
	}
	tile, err := a.prefillTile(sh.HeadDim)
	if err != nil {
		return err
	}
	return a.dispatchMain(s, sh, T, tile, 1, q, kCache, vCache, out)
}

// Decode records causal attention for one query token at position pos0, read from step slot
// AttentionPosSlot when the sequence runs, attending cache positions 0..pos0: q and out f32
// [Heads][HeadDim], caches as in AttentionShape. It is split-K attention (flash-decoding, Dao et
// al. 2023): sh.DecodeSplits() workgroups per KV head each cover a fixed share of 0..pos0 and
// write a partial (unnormalized output, max, sum) to scratch, then a merge pass writes out.
// Nothing recorded depends on pos0, so the sequence can be replayed with SetStep as the position
// grows (up to Ctx-1). scratch must hold sh.DecodeScratchBytes() bytes (ignored when that is
// 0) and must not overlap the other ranges. Errors name the op and the sizes: a bad shape or a
// range too small for it.
func (a *AttentionKernels) Decode(s *gpu.Sequence, sh AttentionShape, q, kCache, vCache, out, scratch gpu.Range) error {
	const op = "attention decode"
	if err := sh.check(op); err != nil {
		return err
	}
	shape := fmt.Sprintf("heads=%d kv heads=%d head dim=%d ctx=%d", sh.Heads, sh.KVHeads, sh.HeadDim, sh.Ctx)
	qBytes := uint64(sh.Heads) * uint64(sh.HeadDim) * 4
	splits := sh.DecodeSplits()
	checks := []attnRange{{"q", q, qBytes}, {"k cache", kCache, sh.CacheBytes()}, {"v cache", vCache, sh.CacheBytes()}, {"out", out, qBytes}}
	if splits > 1 {
		checks = append(checks, attnRange{"scratch", scratch, sh.DecodeScratchBytes()})
	}
	if err := attnCheckRanges(op, shape, checks...); err != nil {
		return err
	}
	if splits > attentionMaxSplits {
		return fmt.Errorf("%s: %d splits, at most %d", op, splits, attentionMaxSplits)
	}
	tile, err := a.decodeTile(sh.HeadDim, sh.Heads/sh.KVHeads)
	if err != nil {
		return err
	}
	if splits == 1 {
		return a.dispatchMain(s, sh, 1, tile, 1, q, kCache, vCache, out)
	}
	if err := a.dispatchMain(s, sh, 1, tile, splits, q, kCache, vCache, scratch); err != nil {
		return err
	}
	merge, err := a.kernel(attnKey{merge: true})
	if err != nil {
		return err
	}
	mlOff := splits * sh.Heads * sh.HeadDim
	return s.Dispatch(merge, [3]uint32{sh.Heads, 1, 1}, []uint32{sh.Heads, sh.HeadDim, splits, mlOff}, scratch, out)
}
