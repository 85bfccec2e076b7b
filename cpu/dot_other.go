//go:build !amd64 || purego

package cpu

// haveAVX2 is false off amd64 (and with the purego build tag): only the portable kernel exists.
const haveAVX2 = false

// haveVNNI is false off amd64 (and with the purego build tag), as haveAVX2.
const haveVNNI = false

// dotCodesAVX2 is never called without AVX2 (haveAVX2 is false).
func dotCodesAVX2(codes *byte, q *int8, chunks int) int32 {
	panic("cpu: dotCodesAVX2 without AVX2")
}

// dotCodesVNNI is never called without AVX-512 VNNI (haveVNNI is false).
func dotCodesVNNI(codes *byte, q *int8, chunks int) int32 {
	panic("cpu: dotCodesVNNI without AVX-512 VNNI")
}

// dotQ8BlocksAVX2 is never called without AVX2 (haveAVX2 is false).
func dotQ8BlocksAVX2(row *byte, q *int8, blocks int, acc *int32) {
	panic("cpu: dotQ8BlocksAVX2 without AVX2")
}
