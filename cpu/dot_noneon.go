//go:build !arm64 || purego

package cpu

// haveNEON is false off arm64 (and with the purego build tag): dotCodesNEON does not exist.
const haveNEON = false

// haveDotProd is false off arm64 (and with the purego build tag), as haveNEON.
const haveDotProd = false

// dotCodesNEON is never called without the arm64 NEON kernel (haveNEON is false).
func dotCodesNEON(codes *byte, q *int8, chunks int) int32 {
	panic("cpu: dotCodesNEON without arm64 NEON")
}

// dotCodesDotProd is never called without the arm64 dot-product kernel (haveDotProd is false).
func dotCodesDotProd(codes *byte, q *int8, chunks int) int32 {
	panic("cpu: dotCodesDotProd without arm64 SDOT")
}
