//go:build !purego

package cpu

import xcpu "golang.org/x/sys/cpu"

//go:generate sh -c "cd asm && go run . -out ../dot_amd64.s -stubs ../dot_stub_amd64.go -pkg cpu"

// haveAVX2 reports whether this CPU runs dotCodesAVX2 (AVX and AVX2, with the OS saving the YMM
// registers, which x/sys/cpu checks).
var haveAVX2 = xcpu.X86.HasAVX && xcpu.X86.HasAVX2

// haveVNNI reports whether this CPU runs dotCodesVNNI and, for KernelVNNI's q8_0 head,
// dotQ8BlocksAVX2: AVX2, AVX-512 Foundation (ZMM registers, with the OS saving the ZMM and mask
// state, which x/sys/cpu checks before it sets any AVX-512 flag), AVX512VL (the EVEX YMM/XMM
// forms of the final horizontal add) and AVX512_VNNI (VPDPBUSD). AVX512BW is not used by the
// kernel (no byte or word instruction is EVEX-encoded) and is not required.
var haveVNNI = haveAVX2 && xcpu.X86.HasAVX512F && xcpu.X86.HasAVX512VL && xcpu.X86.HasAVX512VNNI
