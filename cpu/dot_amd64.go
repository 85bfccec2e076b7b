//go:build !purego

package cpu

import xcpu "golang.org/x/sys/cpu"

//go:generate sh -c "cd asm && go run . -out ../dot_amd64.s -stubs ../dot_stub_amd64.go -pkg cpu"

// haveAVX2 reports whether this CPU runs dotCodesAVX2 (AVX and AVX2, with the OS saving the YMM
// registers, which x/sys/cpu checks).
var haveAVX2 = xcpu.X86.HasAVX && xcpu.X86.HasAVX2
