// Command asm generates the AVX2 and AVX-512 VNNI ternary dot-product kernels of package cpu
// (../dot_amd64.s and their Go declarations ../dot_stub_amd64.go) with avo
// (github.com/mmcloughlin/avo). It is its own module so that bitgpu's go.mod does not depend on
// avo; run it through `go generate ./cpu/`.
package main

import (
	"github.com/mmcloughlin/avo/ir"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

func main() {
	ConstraintExpr("!purego")
	dotCodes()
	dotCodesVNNI()
	dotQ8()
	Generate()
}

// dotCodes emits dotCodesAVX2: Σ code·q over chunks of 128 columns. A chunk is 32 bytes of codes
// (byte m holds, at bits 2k..2k+1, the code 0..2 of column 32k+m) and 128 int8 activations. For
// each k the codes are shifted down, masked to bytes, and multiplied with 32 activations by
// VPMADDUBSW (unsigned code × signed int8, adjacent pairs summed to int16: |pair| <= 512, no
// saturation); the four int16 vectors are added (|lane| <= 2048), widened by VPMADDWD with ones
// and added to an int32 accumulator. All integer, so the sum is exact in any order.
func dotCodes() {
	TEXT("dotCodesAVX2", NOSPLIT, "func(codes *byte, q *int8, chunks int) int32")
	Doc("dotCodesAVX2 returns Σ code·q over chunks*128 columns (AVX2; see dot.go for the layout).")
	codes := Load(Param("codes"), GP64())
	q := Load(Param("q"), GP64())
	n := Load(Param("chunks"), GP64())

	tmp := GP32()
	mask, ones, acc := YMM(), YMM(), YMM()
	MOVL(U32(0x03030303), tmp)
	VMOVD(tmp, mask.AsX())
	VPBROADCASTD(mask.AsX(), mask)
	MOVL(U32(0x00010001), tmp)
	VMOVD(tmp, ones.AsX())
	VPBROADCASTD(ones.AsX(), ones)
	VPXOR(acc, acc, acc)

	TESTQ(n, n)
	JZ(LabelRef("done"))
	Label("loop")
	w := YMM()
	VMOVDQU(Mem{Base: codes}, w)
	var p [4]VecVirtual
	for k := range 4 {
		c := YMM()
		if k == 0 {
			VPAND(w, mask, c)
		} else {
			VPSRLW(U8(2*k), w, c)
			VPAND(c, mask, c)
		}
		p[k] = YMM()
		VPMADDUBSW(Mem{Base: q, Disp: 32 * k}, c, p[k])
	}
	VPADDW(p[1], p[0], p[0])
	VPADDW(p[3], p[2], p[2])
	VPADDW(p[2], p[0], p[0])
	VPMADDWD(ones, p[0], p[0])
	VPADDD(p[0], acc, acc)
	ADDQ(U8(32), codes)
	ADDQ(U32(128), q)
	DECQ(n)
	JNZ(LabelRef("loop"))

	Label("done")
	hi := XMM()
	VEXTRACTI128(U8(1), acc, hi)
	VPADDD(hi, acc.AsX(), hi)
	lo := XMM()
	VPSHUFD(U8(0x4e), hi, lo)
	VPADDD(lo, hi, hi)
	VPSHUFD(U8(0xb1), hi, lo)
	VPADDD(lo, hi, hi)
	ret := GP32()
	VMOVD(hi, ret)
	VZEROUPPER()
	Store(ret, ReturnIndex(0))
	RET()
}

// dotQ8 emits dotQ8BlocksAVX2: for each of blocks Q8_0 blocks of a row (34 bytes: an f16 scale,
// then 32 int8 weights) the exact int32 sum of the 32 weights times 32 int8 activations, written
// to acc[b]. Weights and activations are sign-extended to int16 (VPMOVSXBW), so every int8 value,
// -128 included, is exact; VPMADDWD gives int32 pairs, and a horizontal add the block's sum.
func dotQ8() {
	TEXT("dotQ8BlocksAVX2", NOSPLIT, "func(row *byte, q *int8, blocks int, acc *int32)")
	Doc("dotQ8BlocksAVX2 writes acc[b] = Σ w·q over Q8_0 block b of row (AVX2; see logitsQ8).")
	row := Load(Param("row"), GP64())
	q := Load(Param("q"), GP64())
	n := Load(Param("blocks"), GP64())
	acc := Load(Param("acc"), GP64())
	TESTQ(n, n)
	JZ(LabelRef("q8done"))
	Label("q8loop")
	w0, w1, q0, q1 := YMM(), YMM(), YMM(), YMM()
	VPMOVSXBW(Mem{Base: row, Disp: 2}, w0)
	VPMOVSXBW(Mem{Base: row, Disp: 18}, w1)
	VPMOVSXBW(Mem{Base: q}, q0)
	VPMOVSXBW(Mem{Base: q, Disp: 16}, q1)
	VPMADDWD(q0, w0, w0)
	VPMADDWD(q1, w1, w1)
	VPADDD(w1, w0, w0)
	hi, lo := XMM(), XMM()
	VEXTRACTI128(U8(1), w0, hi)
	VPADDD(hi, w0.AsX(), hi)
	VPSHUFD(U8(0x4e), hi, lo)
	VPADDD(lo, hi, hi)
	VPSHUFD(U8(0xb1), hi, lo)
	VPADDD(lo, hi, hi)
	VMOVD(hi, Mem{Base: acc})
	ADDQ(U8(34), row)
	ADDQ(U8(32), q)
	ADDQ(U8(4), acc)
	DECQ(n)
	JNZ(LabelRef("q8loop"))
	Label("q8done")
	VZEROUPPER()
	RET()
}

// vpdpbusd emits VPDPBUSD (Intel SDM: "VPDPBUSD — Multiply and Add Unsigned and Signed Bytes"),
// which avo v0.5.0 has no constructor for: for each dword lane i,
// acc[i] += Σ_{j<4} u.byte[4i+j]·s.byte[4i+j], u unsigned and s signed, the four products and
// the sum in int32 (wrapping, not saturating: that is VPDPBUSDS). Operands in Go order
// (s, u, acc); s may be memory. The Go assembler encodes it with EVEX (AVX512_VNNI). Inputs and
// outputs are spelled out so that avo's liveness and register allocation see them.
func vpdpbusd(s, u, acc Op) {
	Instruction(&ir.Instruction{
		Opcode:   "VPDPBUSD",
		Operands: []Op{s, u, acc},
		Inputs:   []Op{s, u, acc},
		Outputs:  []Op{acc},
		ISA:      []string{"AVX512_VNNI"},
	})
}

// vnniUnroll is the number of chunks an iteration of dotCodesVNNI's main loop takes, each into
// its own two accumulators, so that 8 independent VPDPBUSD chains hide the instruction's latency.
// 2, 4 and 8 measured the same within noise on the project's AVX-512 VM (2560x2560: 128-136
// weights/ns in the dot-only benchmark); 4 keeps the tail loop short.
const vnniUnroll = 4

// dotCodesVNNI emits dotCodesVNNI: Σ code·q over chunks of 128 columns with 512-bit VPDPBUSD.
//
// A chunk's 32 code bytes are broadcast to both 256-bit halves of a ZMM register
// (VBROADCASTI64X4 from memory, a load with no shuffle) and masked, without any shift, with
// 0x03 (low half) / 0x0c (high half) into one register and 0x30 / 0xc0 into another. Byte m of
// the result is then code·4^k of column 32k+m, k = 0, 1 in the first register and k = 2, 3 in
// the second: at most 2·64 = 128, a valid unsigned byte for VPDPBUSD's unsigned operand. The
// first register lines up with activations 0..63 of the chunk and the second with 64..127, so
// two VPDPBUSD with 64-byte memory operands take the whole chunk, and each dword lane gathers
// 4^k times its true sum. At the end the accumulators are added and each lane shifted right
// arithmetically by 2k (VPSRAVD by vnniShifts; exact, since every term of the lane is a multiple
// of 4^k), then the 16 lanes are added horizontally.
//
// Range: VPDPBUSD adds the four u8·s8 products of a lane straight into int32, with no int16
// intermediate to saturate (VPMADDUBSW's int16 pairs in dotCodesAVX2 are safe only because codes
// are <= 2). A chunk moves a lane by at most 4·128·128 = 2^16 (k = 3, q = -128), so the caller
// passes at most vnniMaxChunks (package cpu, 2^14) chunks a call, keeping every lane below 2^31:
// the sums are exact, and equal dotCodesAVX2's.
func dotCodesVNNI() {
	masks := GLOBL("vnniMasks", RODATA|NOPTR)
	for i := range 32 { // two ZMM constants: 0x03|0x0c and 0x30|0xc0 by 256-bit half
		DATA(4*i, U32([]uint32{0x03030303, 0x0c0c0c0c, 0x30303030, 0xc0c0c0c0}[i/8]))
	}
	shifts := GLOBL("vnniShifts", RODATA|NOPTR)
	for i := range 32 { // the matching right shifts: 0|2 and 4|6 bits
		DATA(4*i, U32(2*(i/8)))
	}

	TEXT("dotCodesVNNI", NOSPLIT, "func(codes *byte, q *int8, chunks int) int32")
	Doc("dotCodesVNNI returns Σ code·q over chunks*128 columns, chunks <= vnniMaxChunks (AVX-512 VNNI; see dot.go).")
	codes := Load(Param("codes"), GP64())
	q := Load(Param("q"), GP64())
	n := Load(Param("chunks"), GP64())

	m01, m23 := ZMM(), ZMM()
	VMOVDQU64(masks, m01)
	VMOVDQU64(masks.Offset(64), m23)
	var a01, a23 [vnniUnroll]VecVirtual
	for u := range vnniUnroll {
		a01[u], a23[u] = ZMM(), ZMM()
		VPXORD(a01[u], a01[u], a01[u])
		VPXORD(a23[u], a23[u], a23[u])
	}
	chunk := func(u int) { // chunk u of the iteration into accumulators u
		w, c := ZMM(), ZMM()
		VBROADCASTI64X4(Mem{Base: codes, Disp: chunkBytes * u}, w)
		VPANDD(m01, w, c)
		VPANDD(m23, w, w)
		vpdpbusd(Mem{Base: q, Disp: chunkCols * u}, c, a01[u])
		vpdpbusd(Mem{Base: q, Disp: chunkCols*u + 64}, w, a23[u])
	}
	CMPQ(n, U8(vnniUnroll))
	JB(LabelRef("vnnitail"))
	Label("vnniloop")
	for u := range vnniUnroll {
		chunk(u)
	}
	ADDQ(U32(chunkBytes*vnniUnroll), codes)
	ADDQ(U32(chunkCols*vnniUnroll), q)
	SUBQ(U8(vnniUnroll), n)
	CMPQ(n, U8(vnniUnroll))
	JAE(LabelRef("vnniloop"))
	Label("vnnitail")
	TESTQ(n, n)
	JZ(LabelRef("vnnidone"))
	Label("vnniloop1")
	chunk(0)
	ADDQ(U8(chunkBytes), codes)
	ADDQ(U32(chunkCols), q)
	DECQ(n)
	JNZ(LabelRef("vnniloop1"))

	Label("vnnidone")
	for u := 1; u < vnniUnroll; u++ {
		VPADDD(a01[u], a01[0], a01[0])
		VPADDD(a23[u], a23[0], a23[0])
	}
	VPSRAVD(shifts, a01[0], a01[0])
	VPSRAVD(shifts.Offset(64), a23[0], a23[0])
	VPADDD(a23[0], a01[0], a01[0])
	y := YMM()
	VEXTRACTI64X4(U8(1), a01[0], y)
	VPADDD(y, a01[0].AsY(), y)
	x, lo := XMM(), XMM()
	VEXTRACTI32X4(U8(1), y, x)
	VPADDD(x, y.AsX(), x)
	VPSHUFD(U8(0x4e), x, lo)
	VPADDD(lo, x, x)
	VPSHUFD(U8(0xb1), x, lo)
	VPADDD(lo, x, x)
	ret := GP32()
	VMOVD(x, ret)
	VZEROUPPER()
	Store(ret, ReturnIndex(0))
	RET()
}

// chunkCols and chunkBytes are package cpu's chunk layout (dot.go): 128 columns in 32 code bytes.
const (
	chunkCols  = 128
	chunkBytes = chunkCols / 4
)
