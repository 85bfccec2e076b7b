package cpu

import (
	"fmt"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// Kernel names the ternary dot-product kernel a Backend uses (WithKernel).
type Kernel string

const (
	// KernelAuto picks KernelVNNI where the CPU has AVX-512 VNNI, else KernelAVX2 where it has
	// AVX2 (amd64); KernelDotProd where the CPU has the Arm dot product, else KernelNEON (arm64);
	// else KernelLUT.
	KernelAuto Kernel = ""
	// KernelVNNI is the avo-generated AVX-512 VNNI kernel (dot_amd64.s, dotCodesVNNI): VPDPBUSD
	// of 64 codes by 64 int8 activations at a time into int32 lanes, Σ code·q − Σ q = Σ t·q, on
	// the same packed codes as KernelAVX2 and with the same int32 sums. Its q8_0 LM head is
	// KernelAVX2's (dotQ8BlocksAVX2). amd64 only.
	KernelVNNI Kernel = "avx512vnni"
	// KernelAVX2 is the avo-generated AVX2 kernel (dot_amd64.s): VPMADDUBSW of 32 codes by 32
	// int8 activations at a time, Σ code·q − Σ q = Σ t·q. amd64 only.
	KernelAVX2 Kernel = "avx2"
	// KernelDotProd is the hand-written arm64 kernel (dot_arm64.s, dotCodesDotProd) for CPUs with
	// the Armv8.2 dot-product instructions (FEAT_DotProd, HWCAP asimddp): SDOT of 16 codes by 16
	// int8 activations at a time into int32 lanes, Σ code·q − Σ q = Σ t·q, on the same packed
	// codes as the amd64 kernels and with the same int32 sums. Its q8_0 LM head is the portable
	// one. arm64 only.
	KernelDotProd Kernel = "neon-dotprod"
	// KernelNEON is the hand-written arm64 kernel (dot_arm64.s, dotCodesNEON) for any arm64 CPU
	// (ARMv8.0 Advanced SIMD): widening multiplies SMULL/SMLAL of 8 codes by 8 int8 activations
	// into int16 lanes, added into int32 lanes by SADALP once a chunk; the same sums as
	// KernelDotProd. Its q8_0 LM head is the portable one. arm64 only.
	KernelNEON Kernel = "neon"
	// KernelLUT is the portable Go kernel: per token, a table gives for every (byte position,
	// byte value) the exact int16 sum of the four trits of that byte times their activations,
	// so a row is Cols/4 table reads (the lookup-table method of T-MAC and bitnet.cpp's TL
	// kernels, as cpuref's I2_S path).
	KernelLUT Kernel = "lut"
)

// resolve returns the kernel k means on this CPU, or an error for an unknown name or a SIMD
// kernel on a CPU (or build) without its instructions.
func (k Kernel) resolve() (Kernel, error) {
	switch k {
	case KernelAuto:
		switch {
		case haveVNNI:
			return KernelVNNI, nil
		case haveAVX2:
			return KernelAVX2, nil
		case haveDotProd:
			return KernelDotProd, nil
		case haveNEON:
			return KernelNEON, nil
		}
		return KernelLUT, nil
	case KernelLUT:
		return k, nil
	case KernelAVX2:
		if !haveAVX2 {
			return "", fmt.Errorf("cpu: kernel %q: this CPU (or build) has no AVX2", k)
		}
		return k, nil
	case KernelVNNI:
		if !haveVNNI {
			return "", fmt.Errorf("cpu: kernel %q: this CPU (or build) has no AVX-512 VNNI (AVX512F, AVX512VL and AVX512_VNNI with OS support)", k)
		}
		return k, nil
	case KernelDotProd:
		if !haveDotProd {
			return "", fmt.Errorf("cpu: kernel %q: this CPU (or build) has no arm64 dot product (ASIMD with ASIMDDP)", k)
		}
		return k, nil
	case KernelNEON:
		if !haveNEON {
			return "", fmt.Errorf("cpu: kernel %q: this CPU (or build) has no arm64 NEON (ASIMD)", k)
		}
		return k, nil
	}
	return "", fmt.Errorf("cpu: unknown kernel %q (want avx512vnni, avx2, neon-dotprod, neon or lut)", k)
}

// Layout of the repacked ternary weights. A row is padded to a whole number of chunks of
// chunkCols columns; a chunk is chunkBytes bytes, and byte m (0..31) of a chunk holds at bits
// 2k..2k+1 (k = 0..3) the code of column chunkCols*chunk + 32k + m: code = trit + 1 (0, 1, 2;
// padding columns hold 1, trit 0). One 32-byte load, a shift by 2k and a mask by 0x03 give 32
// codes as bytes that line up with 32 consecutive int8 activations (the GPU's layout of the
// README, "How the GPU path works", widened to a 256-bit register). The VNNI kernel reads the
// same bytes, masked by 0x03<<2k without the shift (code·4^k; see cpu/asm).
const (
	chunkCols  = 128
	chunkBytes = chunkCols / 4
)

// Measured on this project's 2-core AMD EPYC (Zen 3) KVM VM, one thread, one token
// (go test -run '^$' -bench Kernel -benchtime 30x ./cpu/; weights/ns, higher is faster):
//
//	kernel                                        2560x2560  6912x2560  2560x6912
//	AVX2 VPMADDUBSW on the codes (KernelAVX2)          50         51         54
//	portable LUT, 256 entries a byte (KernelLUT)        3.7        4.0        2.7
//	portable bit-planes + popcount (benchmark only)     4.2        3.3        4.3
//	cpuref (LUT straight from I2_S, 2 goroutines)       2.6        3.0        2.6
//
// On the project's 2-core Intel Xeon KVM VM with AVX-512 (avx512f/bw/vl, avx512_vnni; 2 MiB L2
// a core), medians of go test -run '^$' -bench 'Kernel/.*/(avx2|avx512vnni)$' -count 5 -cpu 1
// ./cpu/:
//
//	kernel                                        2560x2560  6912x2560  2560x6912
//	AVX-512 VNNI VPDPBUSD, ZMM (KernelVNNI)            95         85        106
//	AVX2 VPMADDUBSW on the codes (KernelAVX2)          67         61         73
//
// so KernelVNNI is 1.40-1.45x KernelAVX2 there and is the default where the CPU has it. A
// 256-bit VPDPBUSD variant (AVX512VL; four masks, four VPDPBUSD a chunk) reached 98-115
// weights/ns on a dot-only loop where the 512-bit one reached 111-142 and AVX2 72-79, and was
// dropped. Without the per-row Go epilogue the 512-bit loop is at ~115 weights/ns (29 GB/s of
// codes) on the shapes that do not fit in L2, so those are bound by memory more than by VPDPBUSD.
//
// The AVX2 kernel is 13-20x the portable ones (Zen 3 table). Between the portable two the
// bit-plane kernel (+1/-1 masks per 64 columns, 8 activation bit planes, 16 popcounts per 64
// weights) is ahead on two shapes of three; the LUT is kept as the fallback because it reads the
// same packed codes as the AVX2 kernel (one layout, tested by the same parity tests), and the
// bit-planes would need a second layout. An earlier run of the AVX2 kernel gave 15-30 weights/ns
// until the constants were loaded with VMOVD instead of the SSE MOVD: mixing SSE and AVX
// encodings cost ~130 ns a call here.
//
// The arm64 kernels (KernelDotProd, KernelNEON) have not been measured on arm64 hardware; they
// are tested for exact sums under qemu user emulation (make test-arm64), where timings say
// nothing about speed.

// packed is one or more ternary projections stacked by rows (q/k/v or gate/up fused) in the
// layout above, with what cpuref's TernaryMatMul needs to reproduce its float steps.
type packed struct {
	rows, cols int
	chunks     int    // chunks per row: ceil(cols / chunkCols)
	codes      []byte // [rows][chunks][chunkBytes]
	// Runs: a run is a maximal stretch of groups of a row with equal weight scales (one per
	// row for I2_S). Row r's runs are runEnd/runScale[runStart[r]:runStart[r+1]]; runEnd is the
	// chunk where the run ends (exclusive), runScale the scale cpuref multiplies it by (that of
	// the run's last group).
	runStart []int32
	runEnd   []int32
	runScale []float32
	extra    []float32 // per row: the *.scale output factor, applied where hasExtra
	hasExtra []bool
	floats   []source // float projections (F16/F32/BF16) instead of codes: see matmulFloat
}

// source is one projection to pack: its matrix and optional *.scale factor. A float projection
// (upstream `--outtype f16` files) has f instead of w.
type source struct {
	w     *model.TernaryMatrix
	f     *model.Tensor
	scale float32
	extra bool
}

// pack repacks the projections srcs (all with the same Cols) into one packed matrix whose rows
// are srcs[0]'s, then srcs[1]'s, ... Rows are decoded with model.TernaryMatrix.Row across p's
// workers (the reads of the memory-mapped file are guarded by model.CatchFault). TQ block sizes
// (256) are whole chunks, so the runs of a TQ row end on chunk boundaries.
func pack(p *pool, srcs ...source) (*packed, error) {
	if srcs[0].f != nil || srcs[len(srcs)-1].f != nil {
		return packFloat(srcs)
	}
	cols := srcs[0].w.Cols
	rows := 0
	for _, s := range srcs {
		if s.w.Cols != cols {
			return nil, fmt.Errorf("cpu: fused projections %s and %s have %d and %d columns", srcs[0].w.Name, s.w.Name, cols, s.w.Cols)
		}
		if gs := s.w.GroupSize(); gs != s.w.Cols && gs%chunkCols != 0 {
			return nil, fmt.Errorf("cpu: tensor %s: group size %d is not a multiple of %d", s.w.Name, gs, chunkCols)
		}
		rows += s.w.Rows
	}
	chunks := (cols + chunkCols - 1) / chunkCols
	pk := &packed{
		rows: rows, cols: cols, chunks: chunks,
		codes:    make([]byte, rows*chunks*chunkBytes),
		runStart: make([]int32, rows+1),
		extra:    make([]float32, rows),
		hasExtra: make([]bool, rows),
	}
	// Runs per row, and where each row's runs start, so the workers can fill them in place.
	type rowRuns struct {
		end   []int32
		scale []float32
	}
	runs := make([]rowRuns, rows)
	base := 0
	for _, s := range srcs {
		w := s.w
		off := base
		gs, groups := w.GroupSize(), w.Groups()
		err := p.run(w.Rows, 16, func(lo, hi int) error {
			return model.CatchFault(func() error {
				trits := make([]int8, w.Cols)
				scales := make([]float32, groups)
				for r := lo; r < hi; r++ {
					if err := w.Row(r, trits, scales); err != nil {
						return err
					}
					dst := pk.codes[(off+r)*chunks*chunkBytes : (off+r+1)*chunks*chunkBytes]
					encodeRow(dst, trits)
					var rr rowRuns
					for g := range groups {
						if g+1 < groups && scales[g+1] == scales[g] {
							continue // cpuref keeps adding in int32
						}
						end := chunks // the last run takes the padding too
						if g+1 < groups {
							end = (g + 1) * gs / chunkCols
						}
						rr.end = append(rr.end, int32(end))
						rr.scale = append(rr.scale, scales[g])
					}
					runs[off+r] = rr
					pk.extra[off+r], pk.hasExtra[off+r] = s.scale, s.extra
				}
				return nil
			})
		})
		if err != nil {
			return nil, fmt.Errorf("cpu: %w", err)
		}
		base += w.Rows
	}
	for r, rr := range runs {
		pk.runStart[r+1] = pk.runStart[r] + int32(len(rr.end))
		pk.runEnd = append(pk.runEnd, rr.end...)
		pk.runScale = append(pk.runScale, rr.scale...)
	}
	return pk, nil
}

// encodeRow writes one row's trits (-1, 0, 1; len <= len(dst)*4) into dst in the chunk layout,
// padding with code 1 (trit 0).
func encodeRow(dst []byte, trits []int8) {
	for i := range dst {
		dst[i] = 0x55 // code 1 in all four slots
	}
	for c, t := range trits {
		ch, in := c/chunkCols, c%chunkCols
		k, m := in/32, in%32
		i := ch*chunkBytes + m
		dst[i] = dst[i]&^(3<<(2*k)) | byte(t+1)<<(2*k)
	}
}

// acts is the int8 input of a packed matrix product for n tokens: the quantized activations
// padded to whole chunks with zeros, per token the prefix sums of q at chunk boundaries (for the
// SIMD kernels' Σ code·q − Σ q), and the factor Rcp32(s) that takes a sum back to floats.
type acts struct {
	n, chunks int
	q         []int8    // [n][chunks*chunkCols]
	prefix    []int32   // [n][chunks+1]: prefix[t][c] = Σ q of token t over chunks < c
	rcp       []float32 // [n]: cpuref.Rcp32(s_t)
	x         []float32 // [n][cols]: the float rows q was quantized from (float projections' input)
}

// set fills a for n tokens from q ([n][cols], from cpuref.QuantizeActivations) and scales s.
func (a *acts) set(q []int8, s []float32, cols int) {
	n := len(s)
	a.n, a.chunks = n, (cols+chunkCols-1)/chunkCols
	pc := a.chunks * chunkCols
	a.q = grow(a.q, n*pc)
	a.prefix = grow(a.prefix, n*(a.chunks+1))
	a.rcp = grow(a.rcp, n)
	for t := range n {
		qt := a.q[t*pc : (t+1)*pc]
		copy(qt, q[t*cols:(t+1)*cols])
		clear(qt[cols:])
		pre := a.prefix[t*(a.chunks+1) : (t+1)*(a.chunks+1)]
		pre[0] = 0
		for c := range a.chunks {
			var sum int32
			for _, v := range qt[c*chunkCols : (c+1)*chunkCols] {
				sum += int32(v)
			}
			pre[c+1] = pre[c] + sum
		}
		a.rcp[t] = cpuref.Rcp32(s[t])
	}
}

// grow returns s resliced to n elements, reallocated when its capacity is short (contents are
// not kept).
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// lutEntries is the number of table entries per code byte (every byte value).
const lutEntries = 256

// buildLUT fills lut ([chunks*chunkBytes][256]) for one token's padded activations q: entry
// [i][b] is Σ_k (((b >> 2k) & 3) − 1)·q[col(i, k)], the exact sum of the four trits byte value b
// encodes times their activations (code 3 never occurs; it counts as 0 here). The table is built
// by doubling: first the 4 entries of slot 0, then 16, 64, 256.
func buildLUT(lut []int16, q []int8, lo, hi int) {
	for i := lo; i < hi; i++ {
		ch, m := i/chunkBytes, i%chunkBytes
		base := ch*chunkCols + m
		var x [4]int16
		for k := range 4 {
			x[k] = int16(q[base+32*k])
		}
		out := lut[i*lutEntries : (i+1)*lutEntries]
		// Slot k of the byte is bits 2k..2k+1; build over the high slot last so that
		// out[v] = Σ_k trit(v, k)·x[k].
		out[0], out[1], out[2], out[3] = -x[0], 0, x[0], 0
		size := 4
		for k := 1; k < 4; k++ {
			for code := 3; code >= 0; code-- {
				var add int16
				switch code {
				case 0:
					add = -x[k]
				case 2:
					add = x[k]
				}
				for v := range size {
					out[code*size+v] = out[v] + add
				}
			}
			size *= 4
		}
	}
}

// dotLUT returns Σ t·q over the code bytes codes[lo:hi] of a row, reading lut (see buildLUT;
// byte i of the row reads lut[i*256:]).
func dotLUT(lut []int16, codes []byte, lo, hi int) int32 {
	var a0, a1, a2, a3 int32
	i := lo
	for ; i+4 <= hi; i += 4 {
		c := codes[i : i+4 : i+4]
		t := lut[i*lutEntries : (i+4)*lutEntries : (i+4)*lutEntries]
		a0 += int32(t[c[0]])
		a1 += int32(t[lutEntries+int(c[1])])
		a2 += int32(t[2*lutEntries+int(c[2])])
		a3 += int32(t[3*lutEntries+int(c[3])])
	}
	for ; i < hi; i++ {
		a0 += int32(lut[i*lutEntries+int(codes[i])])
	}
	return a0 + a1 + a2 + a3
}

// dotAVX2 returns Σ t·q over chunks [c0, c1) of one row's codes and one token's activations:
// Σ code·q (dotCodesAVX2) minus Σ q from the prefix sums. It and dotVNNI, dotNEON and
// dotDotProd call their kernels directly: one wrapper taking the kernel as a func value measured
// 2.5% slower (VNNI, 6912×2560, one thread).
func dotAVX2(codes []byte, q []int8, prefix []int32, c0, c1 int) int32 {
	if c1 <= c0 {
		return 0
	}
	_ = codes[c1*chunkBytes-1]
	_ = q[c1*chunkCols-1]
	s := dotCodesAVX2(&codes[c0*chunkBytes], &q[c0*chunkCols], c1-c0)
	return s - (prefix[c1] - prefix[c0])
}

// vnniMaxChunks is the most chunks one dotCodesVNNI call takes (2^14 chunks, 2^21 columns). A
// chunk adds at most 2^16 to a lane of its accumulators (four products code·4^k·q, each at most
// 128·128 in magnitude; see cpu/asm), so 2^14 chunks keep every lane within ±2^30 and the int32
// sums exact; longer stretches are split into calls of this many.
const vnniMaxChunks = 1 << 14

// dotVNNI returns Σ t·q over chunks [c0, c1) of one row's codes and one token's activations,
// exactly dotAVX2's value: Σ code·q (dotCodesVNNI, at most vnniMaxChunks chunks a call) minus
// Σ q from the prefix sums.
func dotVNNI(codes []byte, q []int8, prefix []int32, c0, c1 int) int32 {
	if c1 <= c0 {
		return 0
	}
	_ = codes[c1*chunkBytes-1]
	_ = q[c1*chunkCols-1]
	var s int32
	for c := c0; c < c1; c += vnniMaxChunks {
		s += dotCodesVNNI(&codes[c*chunkBytes], &q[c*chunkCols], min(vnniMaxChunks, c1-c))
	}
	return s - (prefix[c1] - prefix[c0])
}

// dotNEON returns Σ t·q over chunks [c0, c1) of one row's codes and one token's activations, as
// dotAVX2: Σ code·q (dotCodesNEON) minus Σ q from the prefix sums. No split is needed: see
// dot_arm64.s for why the kernel's int16 and int32 lanes give the exact int32 sum.
func dotNEON(codes []byte, q []int8, prefix []int32, c0, c1 int) int32 {
	if c1 <= c0 {
		return 0
	}
	_ = codes[c1*chunkBytes-1]
	_ = q[c1*chunkCols-1]
	s := dotCodesNEON(&codes[c0*chunkBytes], &q[c0*chunkCols], c1-c0)
	return s - (prefix[c1] - prefix[c0])
}

// dotDotProd is dotNEON with dotCodesDotProd (SDOT) for Σ code·q.
func dotDotProd(codes []byte, q []int8, prefix []int32, c0, c1 int) int32 {
	if c1 <= c0 {
		return 0
	}
	_ = codes[c1*chunkBytes-1]
	_ = q[c1*chunkCols-1]
	s := dotCodesDotProd(&codes[c0*chunkBytes], &q[c0*chunkCols], c1-c0)
	return s - (prefix[c1] - prefix[c0])
}
