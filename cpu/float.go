package cpu

import (
	"fmt"

	"github.com/bitgpu/bitgpu/cpuref"
)

// packFloat stacks float projections (F16, F32 or BF16; all of srcs, with equal columns) for
// matmulFloat: no repacking, the memory-mapped matrices are read in place.
func packFloat(srcs []source) (*packed, error) {
	pk := &packed{floats: srcs}
	for i, s := range srcs {
		if s.f == nil {
			return nil, fmt.Errorf("cpu: fused projections with %s: ternary and float mixed; want all of one kind", s.w.Name)
		}
		if i == 0 {
			pk.cols = int(s.f.Shape[0])
		} else if int(s.f.Shape[0]) != pk.cols {
			return nil, fmt.Errorf("cpu: fused projections %s and %s have %d and %d columns", srcs[0].f.Name, s.f.Name, pk.cols, s.f.Shape[0])
		}
		pk.rows += int(s.f.Shape[1])
	}
	return pk, nil
}

// matmulFloat is matmul for float projections: for each token t and each stacked matrix, the rows
// of dst[t] are cpuref.FloatMatMul's (Logits' canonical 32-lane dot product of the unquantized
// float input a.x), then the *.scale factor where the projection has one — cpuref's bits.
func matmulFloat(dst []float32, pk *packed, a *acts) error {
	n := a.n
	if len(a.x) != n*pk.cols {
		return fmt.Errorf("cpu: float projection %s: input of %d floats for %d tokens of %d", pk.floats[0].f.Name, len(a.x), n, pk.cols)
	}
	for t := range n {
		x := a.x[t*pk.cols : (t+1)*pk.cols]
		off := t * pk.rows
		for _, s := range pk.floats {
			r := int(s.f.Shape[1])
			out := dst[off : off+r]
			if err := cpuref.FloatMatMul(out, s.f, x, 1); err != nil {
				return err
			}
			if s.extra {
				for i := range out {
					out[i] *= s.scale
				}
			}
			off += r
		}
	}
	return nil
}
