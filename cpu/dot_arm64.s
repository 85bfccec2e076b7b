//go:build !purego

#include "textflag.h"

// Ternary dot-product kernels for arm64 (Advanced SIMD), hand-written: Σ code·q over chunks of
// 128 columns of package cpu's packed layout (dot.go). A chunk is 32 code bytes, byte m holding at
// bits 2k..2k+1 the code 0..2 of column 32k+m, and 128 int8 activations. Per chunk:
//
//	V0, V1    code bytes 0..15 and 16..31
//	V2..V9    activations: V(2+2k+h) holds columns 32k+16h .. 32k+16h+15 (k = 0..3, h = 0, 1)
//	V10..V17  codes: V(10+2k+h) = (V(h) >> 2k) & 3, byte i the code of column 32k+16h+i,
//	          lined up with V(2+2k+h) (for k = 3 the shift alone leaves bits 0..1)
//	V31       the byte mask 0x03 (MOVI)
//
// The codes (0..2) are used as signed bytes, so the products code·q are the signed multiplies of
// the Arm Architecture Reference Manual for A-profile (Arm ARM), section C7.2 (SIMD&FP
// instructions). Go's assembler has no mnemonics for SMULL, SMLAL, SADALP or SDOT, so the macros
// below emit them as WORD directives with the A64 encodings of the Arm ARM; each use names the
// instruction and its operands in a comment.
//
// No saturation can occur: none of these instructions saturates (the saturating forms are
// SQDMULL, SQDMLAL, ...), and every narrow partial is bounded far inside its type. A product
// code·q lies in [-256, 254] (code <= 2, q in [-128, 127]).
//   - dotCodesNEON: an int16 lane of V20..V23 gathers 4 products of one chunk (one per k), so it
//     lies in [-1024, 1016], well inside int16; SADALP then adds two such lanes to an int32 lane
//     (at most 2048 in magnitude a chunk) and V20..V23 start afresh with SMULL on the next chunk.
//   - dotCodesDotProd: SDOT adds 4 products straight into an int32 lane (at most 1024 in
//     magnitude a chunk for each of the 8 accumulators); there is no narrow intermediate.
// The int32 lanes therefore cannot wrap below 2^20 chunks (2^27 columns) a call, and even beyond
// that, ADD, SADALP and SDOT add modulo 2^32 like the int32 sums of the other kernels, so the
// result is the same int32 bit for bit (the VNNI kernel needs its vnniMaxChunks split only for its
// final arithmetic right shifts; these kernels have none).

// SMULL emits SMULL Vd.8H, Vn.8B, Vm.8B (Arm ARM C7.2 "SMULL, SMULL2": Signed Multiply Long,
// vector, Q=0, size=00): each int16 lane i of Vd = int8 Vn[i] × int8 Vm[i], lanes 0..7.
#define SMULL(d, n, m) WORD $(0x0E20C000 | (m)<<16 | (n)<<5 | (d))

// SMULL2 emits SMULL2 Vd.8H, Vn.16B, Vm.16B (Arm ARM C7.2 "SMULL, SMULL2", Q=1): as SMULL on
// byte lanes 8..15.
#define SMULL2(d, n, m) WORD $(0x4E20C000 | (m)<<16 | (n)<<5 | (d))

// SMLAL emits SMLAL Vd.8H, Vn.8B, Vm.8B (Arm ARM C7.2 "SMLAL, SMLAL2": Signed Multiply-Add
// Long, vector, Q=0, size=00): each int16 lane i of Vd += int8 Vn[i] × int8 Vm[i], lanes 0..7,
// modulo 2^16 (not saturating).
#define SMLAL(d, n, m) WORD $(0x0E208000 | (m)<<16 | (n)<<5 | (d))

// SMLAL2 emits SMLAL2 Vd.8H, Vn.16B, Vm.16B (Arm ARM C7.2 "SMLAL, SMLAL2", Q=1): as SMLAL on
// byte lanes 8..15.
#define SMLAL2(d, n, m) WORD $(0x4E208000 | (m)<<16 | (n)<<5 | (d))

// SADALP emits SADALP Vd.4S, Vn.8H (Arm ARM C7.2 "SADALP": Signed Add and Accumulate Long
// Pairwise, Q=1, size=01): each int32 lane i of Vd += int16 Vn[2i] + int16 Vn[2i+1], modulo 2^32.
#define SADALP(d, n) WORD $(0x4E606800 | (n)<<5 | (d))

// SDOT emits SDOT Vd.4S, Vn.16B, Vm.16B (Arm ARM C7.2 "SDOT (vector)": Dot Product signed
// arithmetic, FEAT_DotProd, Q=1, size=10): each int32 lane i of Vd +=
// Σ_{j<4} int8 Vn[4i+j] × int8 Vm[4i+j], modulo 2^32 (not saturating).
#define SDOT(d, n, m) WORD $(0x4E809400 | (m)<<16 | (n)<<5 | (d))

// LOADCHUNK loads one chunk (32 code bytes from R0 into V0, V1; 128 activations from R1 into
// V2..V9, both pointers advanced) and extracts its 128 codes into V10..V17 (see above).
#define LOADCHUNK \
	VLD1.P	32(R0), [V0.B16, V1.B16]; \
	VLD1.P	64(R1), [V2.B16, V3.B16, V4.B16, V5.B16]; \
	VLD1.P	64(R1), [V6.B16, V7.B16, V8.B16, V9.B16]; \
	VAND	V31.B16, V0.B16, V10.B16; \
	VAND	V31.B16, V1.B16, V11.B16; \
	VUSHR	$2, V0.B16, V12.B16; \
	VUSHR	$2, V1.B16, V13.B16; \
	VUSHR	$4, V0.B16, V14.B16; \
	VUSHR	$4, V1.B16, V15.B16; \
	VUSHR	$6, V0.B16, V16.B16; \
	VUSHR	$6, V1.B16, V17.B16; \
	VAND	V31.B16, V12.B16, V12.B16; \
	VAND	V31.B16, V13.B16, V13.B16; \
	VAND	V31.B16, V14.B16, V14.B16; \
	VAND	V31.B16, V15.B16, V15.B16

// func dotCodesNEON(codes *byte, q *int8, chunks int) int32
//
// Plain Advanced SIMD (ARMv8.0): per chunk, 16 widening multiplies (SMULL/SMLAL and their "2"
// forms for the high byte lanes) into four fresh int16 accumulators V20..V23 (V20/V21: byte lanes
// 0..7/8..15 of the h = 0 vectors over k = 0..3; V22/V23: the same for h = 1), then SADALP of
// each into the int32 accumulators V24..V27. The int16 chains restart every chunk, so chunks
// overlap in the pipeline and only SADALP carries a dependency from chunk to chunk.
TEXT ·dotCodesNEON(SB), NOSPLIT, $0-28
	MOVD	codes+0(FP), R0
	MOVD	q+8(FP), R1
	MOVD	chunks+16(FP), R2
	VMOVI	$3, V31.B16
	VEOR	V24.B16, V24.B16, V24.B16
	VEOR	V25.B16, V25.B16, V25.B16
	VEOR	V26.B16, V26.B16, V26.B16
	VEOR	V27.B16, V27.B16, V27.B16
	CBZ	R2, neondone

neonloop:
	LOADCHUNK
	SMULL(20, 10, 2)   // SMULL  V20.8H, V10.8B,  V2.8B   (k=0, h=0, lanes 0..7)
	SMULL2(21, 10, 2)  // SMULL2 V21.8H, V10.16B, V2.16B  (k=0, h=0, lanes 8..15)
	SMULL(22, 11, 3)   // SMULL  V22.8H, V11.8B,  V3.8B   (k=0, h=1)
	SMULL2(23, 11, 3)  // SMULL2 V23.8H, V11.16B, V3.16B
	SMLAL(20, 12, 4)   // SMLAL  V20.8H, V12.8B,  V4.8B   (k=1, h=0)
	SMLAL2(21, 12, 4)  // SMLAL2 V21.8H, V12.16B, V4.16B
	SMLAL(22, 13, 5)   // SMLAL  V22.8H, V13.8B,  V5.8B   (k=1, h=1)
	SMLAL2(23, 13, 5)  // SMLAL2 V23.8H, V13.16B, V5.16B
	SMLAL(20, 14, 6)   // SMLAL  V20.8H, V14.8B,  V6.8B   (k=2, h=0)
	SMLAL2(21, 14, 6)  // SMLAL2 V21.8H, V14.16B, V6.16B
	SMLAL(22, 15, 7)   // SMLAL  V22.8H, V15.8B,  V7.8B   (k=2, h=1)
	SMLAL2(23, 15, 7)  // SMLAL2 V23.8H, V15.16B, V7.16B
	SMLAL(20, 16, 8)   // SMLAL  V20.8H, V16.8B,  V8.8B   (k=3, h=0)
	SMLAL2(21, 16, 8)  // SMLAL2 V21.8H, V16.16B, V8.16B
	SMLAL(22, 17, 9)   // SMLAL  V22.8H, V17.8B,  V9.8B   (k=3, h=1)
	SMLAL2(23, 17, 9)  // SMLAL2 V23.8H, V17.16B, V9.16B
	SADALP(24, 20)     // SADALP V24.4S, V20.8H
	SADALP(25, 21)     // SADALP V25.4S, V21.8H
	SADALP(26, 22)     // SADALP V26.4S, V22.8H
	SADALP(27, 23)     // SADALP V27.4S, V23.8H
	SUBS	$1, R2, R2
	BNE	neonloop

neondone:
	VADD	V25.S4, V24.S4, V24.S4
	VADD	V27.S4, V26.S4, V26.S4
	VADD	V26.S4, V24.S4, V24.S4
	VADDV	V24.S4, V24
	VMOV	V24.S[0], R3
	MOVW	R3, ret+24(FP)
	RET

// func dotCodesDotProd(codes *byte, q *int8, chunks int) int32
//
// Advanced SIMD with FEAT_DotProd (Armv8.2+, HWCAP asimddp): per chunk, 8 SDOT of 16 codes by
// 16 activations, each into its own int32 accumulator V20..V27 (8 independent chains to hide the
// instruction's latency), added together at the end.
TEXT ·dotCodesDotProd(SB), NOSPLIT, $0-28
	MOVD	codes+0(FP), R0
	MOVD	q+8(FP), R1
	MOVD	chunks+16(FP), R2
	VMOVI	$3, V31.B16
	VEOR	V20.B16, V20.B16, V20.B16
	VEOR	V21.B16, V21.B16, V21.B16
	VEOR	V22.B16, V22.B16, V22.B16
	VEOR	V23.B16, V23.B16, V23.B16
	VEOR	V24.B16, V24.B16, V24.B16
	VEOR	V25.B16, V25.B16, V25.B16
	VEOR	V26.B16, V26.B16, V26.B16
	VEOR	V27.B16, V27.B16, V27.B16
	CBZ	R2, sdotdone

sdotloop:
	LOADCHUNK
	SDOT(20, 10, 2)  // SDOT V20.4S, V10.16B, V2.16B  (k=0, h=0)
	SDOT(21, 11, 3)  // SDOT V21.4S, V11.16B, V3.16B  (k=0, h=1)
	SDOT(22, 12, 4)  // SDOT V22.4S, V12.16B, V4.16B  (k=1, h=0)
	SDOT(23, 13, 5)  // SDOT V23.4S, V13.16B, V5.16B  (k=1, h=1)
	SDOT(24, 14, 6)  // SDOT V24.4S, V14.16B, V6.16B  (k=2, h=0)
	SDOT(25, 15, 7)  // SDOT V25.4S, V15.16B, V7.16B  (k=2, h=1)
	SDOT(26, 16, 8)  // SDOT V26.4S, V16.16B, V8.16B  (k=3, h=0)
	SDOT(27, 17, 9)  // SDOT V27.4S, V17.16B, V9.16B  (k=3, h=1)
	SUBS	$1, R2, R2
	BNE	sdotloop

sdotdone:
	VADD	V21.S4, V20.S4, V20.S4
	VADD	V23.S4, V22.S4, V22.S4
	VADD	V25.S4, V24.S4, V24.S4
	VADD	V27.S4, V26.S4, V26.S4
	VADD	V22.S4, V20.S4, V20.S4
	VADD	V26.S4, V24.S4, V24.S4
	VADD	V24.S4, V20.S4, V20.S4
	VADDV	V20.S4, V20
	VMOV	V20.S[0], R3
	MOVW	R3, ret+24(FP)
	RET
