//go:build cgo

package runtime

import (
	"fmt"

	"github.com/bitgpu/bitgpu/gpu"
)

func init() {
	kernelDefs = append(kernelDefs,
		kernelDef{name: "topk", variants: []variant{{spv: "topk"}}, bindings: 3, outputs: []int{2}, push: 16})
}

const (
	// topKChunk is how many logits one workgroup of the select pass sorts (shaders/topk.comp's C).
	topKChunk = 2 * MaxSampleCandidates
	// topKGroup is how many lists one workgroup of a merge pass merges (the shader's G).
	topKGroup = 16
	// topKPair is the bytes of one (key, id) or (id, logit) entry.
	topKPair = 8
)

// topKLevels returns the list count after each pass of TopK over n logits: ceil(n/topKChunk)
// after the select pass, then ceil(previous/topKGroup) per merge pass, down to 1.
func topKLevels(n uint32) []uint32 {
	lists := []uint32{(n + topKChunk - 1) / topKChunk}
	for l := lists[0]; l > 1; {
		l = (l + topKGroup - 1) / topKGroup
		lists = append(lists, l)
	}
	return lists
}

// TopKScratchBytes is the device scratch TopK needs for n logits: the lists of the select pass
// and of the first merge pass (the later passes reuse the two areas), at least one list.
func TopKScratchBytes(n uint32) uint64 {
	lv := topKLevels(n)
	lists := uint64(lv[0])
	if len(lv) > 1 {
		lists += uint64(lv[1])
	} else {
		lists++
	}
	return lists * MaxSampleCandidates * topKPair
}

// TopKOutBytes is the size of TopK's result: MaxSampleCandidates (id, logit bits) pairs.
const TopKOutBytes = MaxSampleCandidates * topKPair

// TopK records the passes that select the MaxSampleCandidates best of the n f32 logits at logits
// (n > 0) in the candidate order (CandidateKey descending, then id ascending; TopCandidates is
// the host twin) into out: pairs of uint32 (token id, logit bits), best first — the bits copied
// from the row. When n < MaxSampleCandidates the entries after the n-th are (0xffffffff, 0).
// scratch (device memory, TopKScratchBytes(n), offset aligned for a storage binding) holds the
// intermediate lists. Passes: one select pass of ceil(n/512) workgroups, then merge passes of
// ceil(lists/16) workgroups until one list is left (3 passes for 128,256 logits, 1 up to 512).
// Errors: n = 0 or an operand too small.
func (ks *Kernels) TopK(s *gpu.Sequence, logits, scratch, out gpu.Range, n uint32) error {
	if n == 0 {
		return fmt.Errorf("topk: no logits")
	}
	if err := checkLen("topk", n, logits); err != nil {
		return err
	}
	if need := TopKScratchBytes(n); scratch.Size < need {
		return fmt.Errorf("topk: scratch holds %d bytes, need %d for %d logits", scratch.Size, need, n)
	}
	if out.Size < TopKOutBytes {
		return fmt.Errorf("topk: output holds %d bytes, need %d", out.Size, TopKOutBytes)
	}
	k, err := ks.kernel("topk")
	if err != nil {
		return err
	}
	lv := topKLevels(n)
	area := func(off, lists uint32) gpu.Range {
		return gpu.Range{Buf: scratch.Buf, Offset: scratch.Offset + uint64(off)*MaxSampleCandidates*topKPair, Size: uint64(lists) * MaxSampleCandidates * topKPair}
	}
	// Two areas: A after the select pass (lv[0] lists), B (lv[1] lists, or one) after it.
	b1 := uint32(1)
	if len(lv) > 1 {
		b1 = lv[1]
	}
	areas := [2]gpu.Range{area(0, lv[0]), area(lv[0], b1)}
	final := func(last bool) uint32 {
		if last {
			return 1
		}
		return 0
	}
	dst := areas[0]
	if len(lv) == 1 {
		dst = out
	}
	if err := s.Dispatch(k, [3]uint32{lv[0], 1, 1}, []uint32{n, 0, final(len(lv) == 1), topKGroup}, logits, areas[1], dst); err != nil {
		return err
	}
	for i := 1; i < len(lv); i++ {
		src, dst := areas[(i-1)%2], areas[i%2]
		if i == len(lv)-1 {
			dst = out
		}
		if err := s.Dispatch(k, [3]uint32{lv[i], 1, 1}, []uint32{lv[i-1], 1, final(i == len(lv)-1), topKGroup}, logits, src, dst); err != nil {
			return err
		}
	}
	return nil
}
