// Command asm generates the AVX2 ternary dot-product kernel of package cpu (../dot_amd64.s and
// its Go declaration ../dot_stub_amd64.go) with avo (github.com/mmcloughlin/avo). It is its own
// module so that bitgpu's go.mod does not depend on avo; run it through `go generate ./cpu/`.
package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

func main() {
	ConstraintExpr("!purego")
	dotCodes()
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
