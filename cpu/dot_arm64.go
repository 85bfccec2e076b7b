//go:build !purego

package cpu

import xcpu "golang.org/x/sys/cpu"

// haveNEON reports whether this CPU runs dotCodesNEON: Advanced SIMD (HWCAP asimd, part of every
// arm64 Linux machine Go runs on, but checked rather than assumed).
var haveNEON = xcpu.ARM64.HasASIMD

// haveDotProd reports whether this CPU runs dotCodesDotProd: Advanced SIMD with the Armv8.2
// dot-product instructions (FEAT_DotProd, HWCAP asimddp; GODEBUG=cpu.asimddp=off turns it off,
// which x/sys/cpu honours, so that KernelAuto falls back to KernelNEON).
var haveDotProd = haveNEON && xcpu.ARM64.HasASIMDDP

// dotCodesNEON returns Σ code·q over chunks*128 columns (codes: chunks*32 bytes in the layout of
// dot.go; q: chunks*128 int8 activations) with ARMv8.0 Advanced SIMD: SMULL/SMLAL into int16
// lanes, SADALP into int32 lanes (dot_arm64.s). Exact modulo 2^32, as every kernel's int32 sum.
//
//go:noescape
func dotCodesNEON(codes *byte, q *int8, chunks int) int32

// dotCodesDotProd returns dotCodesNEON's sum with SDOT (FEAT_DotProd) into int32 lanes
// (dot_arm64.s); only where haveDotProd.
//
//go:noescape
func dotCodesDotProd(codes *byte, q *int8, chunks int) int32
