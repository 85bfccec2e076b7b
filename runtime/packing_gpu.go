//go:build cgo

package runtime

import (
	"fmt"
	"strconv"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/model"
)

// code2Bit returns the code (trit+1) of column c of a row in the 2-bit layout (RepackTernary):
// bits [2s+8b, 2s+8b+1] of word c/16 hold column 16w + 4s + b.
func code2Bit(row []uint32, c int) uint32 {
	rem := c % 16
	return row[c/16] >> uint(2*(rem/4)+8*(rem%4)) & 3
}

// PackTernaryBase3 converts w's device words from the 2-bit layout (RepackTernary,
// RepackTernaryBlocks, StackTernary or StackTernaryRoPE: Rows*Cols/16 words, then the per-block
// scales from w.BlockScales when it is not 0) to the base-3 layout of ternary_matmul.comp
// (PACKING = 1; its header): for each row and 256-column block g, three 16-byte groups j = 0..2
// whose byte b holds, in TQ1_0's encoding (model.TQ1Pack), the codes of columns 80j + 16n + b
// of the block for n = 0..4, and one tail word holding columns 240..255 in the 2-bit layout. All
// rows' groups come first (3*Cols/256 uvec4 a row), then all rows' tail words (Cols/256 a row),
// then the per-block scales, whose new start it stores in w.BlockScales; it sets w.Packing. Rows
// and scales keep their order, so every row's int32 sums are unchanged. Columns not a multiple of
// 256, a word count that does not match, or a code 3 (not a trit) is an error naming w.
func PackTernaryBase3(words []uint32, w *TernaryWeights) ([]uint32, error) {
	rows, cols := int(w.Rows), int(w.Cols)
	if !base3Fits(cols) {
		return nil, fmt.Errorf("tensor %s: %d columns; the base-3 layout needs a multiple of 256", w.Name, cols)
	}
	nw, G := cols/16, cols/256
	trits := rows * nw
	if w.BlockScales != 0 && int(w.BlockScales) != trits || len(words) < trits || w.BlockScales == 0 && len(words) != trits {
		return nil, fmt.Errorf("tensor %s: %d words for %dx%d trits (block scales at %d)", w.Name, len(words), rows, cols, w.BlockScales)
	}
	out := make([]uint32, rows*13*G, rows*13*G+len(words)-trits)
	tails := rows * 12 * G
	rowTrits := make([]int8, cols) // one row's trits, column order
	for r := 0; r < rows; r++ {
		row := words[r*nw : (r+1)*nw]
		for _, v := range row {
			if (v>>1)&v&0x55555555 != 0 {
				return nil, fmt.Errorf("tensor %s: row %d holds a 2-bit code 3, not a trit", w.Name, r)
			}
		}
		for c := range rowTrits {
			rowTrits[c] = int8(code2Bit(row, c)) - 1
		}
		for g := 0; g < G; g++ {
			for j := 0; j < 3; j++ {
				base := 256*g + 80*j
				for b := 0; b < 16; b++ {
					by := model.TQ1Pack(rowTrits[base+b], rowTrits[base+16+b], rowTrits[base+32+b], rowTrits[base+48+b], rowTrits[base+64+b])
					out[(r*3*G+3*g+j)*4+b/4] |= uint32(by) << (8 * (b % 4))
				}
			}
			out[tails+r*G+g] = row[16*g+15]
		}
	}
	if w.BlockScales != 0 {
		w.BlockScales = uint32(len(out))
		out = append(out, words[trits:]...)
	}
	w.Packing = PackingBase3
	return out, nil
}

// packingRule is one row of packingTable: devices of Type (gpu.Info.Type; "" any) and VendorID
// (0 any) with a default subgroup size of at least MinSubgroup (0 any) get Packing for
// PackingAuto, and WideLoads for their 2-bit matrices (TernaryWeights.WideLoads).
type packingRule struct {
	Type        string
	VendorID    uint32
	MinSubgroup uint32
	Packing     TernaryPacking
	WideLoads   bool
}

// packingTable is the per-device tuning of the ternary weights, first match wins.
//
// Batch-1 decode on a real GPU is bound by the bytes it reads (and by per-dispatch latency), so
// discrete and integrated GPUs take the base-3 layout — 18.75 % fewer weight bytes, decoded with
// a few integer operations a byte, free next to the memory traffic — and read what stays 2-bit
// (columns not a multiple of 256, or --ternary-packing 2bit) as 128-bit loads.
//
// CPU-type devices (lavapipe, SwiftShader) run the shader as vectorized CPU code, bound by
// arithmetic rather than bytes (lavapipe: the ternary GEMV reaches ~0.1 of its copy bandwidth),
// so they stay 2-bit with word loads, as does anything unknown (virtual, other). Measured on
// lavapipe (llvmpipe, 2 cores, `bitgpu bench kernels`, medians of 3 alternating runs): the base-3
// GEMV took 1.2-1.5x the 2-bit one's time (768x256 241 → 364 µs, 256x768 140 → 191 µs,
// 2560x2560 2.48 → 2.99 ms, 6912x2560 6.78 → 8.41 ms) and the built-in model decoded at 0.68x
// (`generate -n 128 --temp 0`: 199 → 126 tok/s); the 128-bit loads of 2-bit words (a lane's
// uvec4 is four gathers there, where consecutive lanes' words are one vector load) took 1.2x on
// 768x256 (241 → 288 µs) and about the same on the 2B4T shapes.
var packingTable = []packingRule{
	{Type: "cpu", Packing: Packing2Bit},
	{Type: "discrete", Packing: PackingBase3, WideLoads: true},
	{Type: "integrated", Packing: PackingBase3, WideLoads: true},
	{Packing: Packing2Bit},
}

// deviceRule is packingTable's row for a device (the last row matches any).
func deviceRule(info gpu.Info) packingRule {
	for _, r := range packingTable {
		if (r.Type == "" || r.Type == info.Type) && (r.VendorID == 0 || r.VendorID == info.VendorID) && info.SubgroupSize >= r.MinSubgroup {
			return r
		}
	}
	return packingRule{Packing: Packing2Bit}
}

// resolvePacking is the layout a device info gets for p: p itself unless it is PackingAuto (or
// ""), else packingTable's choice.
func resolvePacking(p TernaryPacking, info gpu.Info) TernaryPacking {
	if p != "" && p != PackingAuto {
		return p
	}
	return deviceRule(info).Packing
}

// packKernel returns the pipeline of ternary kernel name (a kernelDefs entry of
// ternary_matmul.comp; k is the one NewKernels built for the 2-bit layout with word loads,
// specialized for tile tokens) for w: k itself for 2-bit weights read a word at a time, else the
// variant's *_packed module (ternary_matmul.comp with PACKED=1, which holds the base-3 and uvec4
// paths the plain modules leave out) with the PACKING constant (constant_id 5) set — 1 for the
// base-3 layout, 2 for 2-bit weights with WideLoads and Cols a multiple of 64 — built on first
// use and kept with the tiled GEMMs.
func (ks *Kernels) packKernel(name string, k *gpu.Kernel, tile uint32, w *TernaryWeights) (*gpu.Kernel, error) {
	packing := uint32(0)
	switch {
	case w.Packing == PackingBase3:
		packing = 1
	case w.WideLoads && w.Cols%64 == 0:
		packing = 2
	default:
		return k, nil
	}
	key := fmt.Sprintf("%s/%d/packing%d", name, tile, packing)
	return ks.respecialized(name, ks.variant[name]+"_packed", key, "a ternary matmul", 3, func(spec []uint32) { spec[0], spec[2] = tile, packing }) // TOKENS, GLU, PACKING
}

// pack converts a ternary matrix's 2-bit device words (with w's layout) to the backend's
// packing: the base-3 layout (PackTernaryBase3) when g.packing is PackingBase3 and w's columns
// are a multiple of 256, else the words as they are. PlanMemoryPacked counts the same choice.
//
// 2-bit matrices get the device's load width (packingRule.WideLoads, or GPUOptions.wideLoads).
func (g *GPU) pack(words []uint32, w *TernaryWeights) ([]uint32, error) {
	if g.packing != PackingBase3 || !base3Fits(int(w.Cols)) {
		w.WideLoads = g.wideLoads
		return words, nil
	}
	return PackTernaryBase3(words, w)
}

// Packing reports the ternary projections' device layout in effect (GPUOptions.Packing as the
// device resolved it): Packing2Bit or PackingBase3; "" for a model with F16 projections, which
// has none.
func (g *GPU) Packing() TernaryPacking {
	if g.f16 {
		return ""
	}
	return g.packing
}

// gemvUnits is the UNITS constant of ternary_matmul.comp's subgroup variants on a device (the
// units — rows, GLU pairs, RoPE quads — one workgroup of 256 invocations covers): override
// (BITGPU_GEMV_UNITS) when not empty, a whole number from 1 to 256; else 256 / the device's
// reported default subgroup size, one unit a subgroup when the driver runs the pipeline at that
// size. The shader's mapping does not depend on the size the driver picks (its header), so the
// value only tunes the work a workgroup does.
//
// One unit a subgroup is the default on every device type: a decode GEMV of the 2B4T shapes
// (1.3–4.4 MB of weights a matrix) is smaller than what a large GPU must keep in flight to reach
// its bandwidth (about bandwidth × latency: 4.8 TB/s × ~0.6 µs ≈ 2.9 MB on an H200), so it is
// latency-bound and the most subgroups, each with the fewest rows, issue the most loads at
// once. More units a workgroup would cut the fused norm prologue's redundant reads of the
// input and norm weight (about 20·K bytes a workgroup: x three times, the weight twice, from
// cache) at the cost of that parallelism; the override is
// there to measure the trade on a real device (no GPU has been lent to this project yet).
func gemvUnits(info gpu.Info, override string) (uint32, error) {
	if override != "" {
		n, err := strconv.ParseUint(override, 10, 32)
		if err != nil || n < 1 || n > 256 {
			return 0, fmt.Errorf("BITGPU_GEMV_UNITS=%q: want a whole number from 1 to 256", override)
		}
		return uint32(n), nil
	}
	if info.SubgroupSize == 0 || info.SubgroupSize > 256 {
		return 1, nil
	}
	return 256 / info.SubgroupSize, nil
}
