package cpu

// minPartWork is the least work a part of a parallel run gets, in weight·token products of the
// ternary kernel (or their equivalent, scalarWork): below it, handing a part to a helper costs
// more than it saves, so small matrices run on fewer threads (never slower with 2 threads than
// with 1). 1<<14 products of 256-column rows are 64 rows, about 2 µs with the per-row overhead
// on this project's Zen 3 VM, against well under 1 µs to hand a part to a polling helper; 1<<16
// (an earlier value) left the built-in model's o and down products and every attention head on
// one thread. Measured with `bitgpu bench e2e --device cpu --threads 1,2` (README, CPU backend).
const minPartWork = 1 << 14

// scalarWork is how many ternary-kernel products one scalar float step of attention or the F16
// logits (a multiply-add with an f16 table lookup, ~1 ns) counts as for minPartWork.
const scalarWork = 16

// engine is what the matrix products share: the worker pool, the kernel and its scratch.
type engine struct {
	pool   *pool
	kernel Kernel  // KernelVNNI, KernelAVX2, KernelDotProd, KernelNEON or KernelLUT (resolved)
	lut    []int16 // KernelLUT: one token's table, [chunks*chunkBytes][256]
}

// matmul computes dst ([n][pk.rows], n = a.n) = the BitLinear products of pk with a's tokens, bit
// for bit as cpuref.TernaryMatMul followed by cpuref's *.scale multiply:
//
//	acc_rk = Σ_{columns of run k} t·q                          (exact int32, any order)
//	y_r    = Σ_k float32(acc_rk)*scale_rk, runs in order      (the first term not added to 0)
//	dst_r  = y_r * Rcp32(s), then * extra_r where the row has a *.scale
//
// Rows are split across the pool.
func (e *engine) matmul(dst []float32, pk *packed, a *acts) error {
	if pk.floats != nil {
		return matmulFloat(dst, pk, a)
	}
	n, rows := a.n, pk.rows
	pc := pk.chunks * chunkCols
	rowBytes := pk.chunks * chunkBytes
	grain := max(1, minPartWork/max(1, pk.cols*n))
	if e.kernel != KernelLUT {
		// The SIMD kernels: rows outer, tokens inner, every row's codes read once. sel numbers
		// the kernel so that the inner loop switches on an int, not a string.
		const (
			selAVX2 = iota
			selVNNI
			selDotProd
			selNEON
		)
		sel := selAVX2
		switch e.kernel {
		case KernelVNNI:
			sel = selVNNI
		case KernelDotProd:
			sel = selDotProd
		case KernelNEON:
			sel = selNEON
		}
		return e.pool.run(rows, grain, func(lo, hi int) error {
			for r := lo; r < hi; r++ {
				codes := pk.codes[r*rowBytes : (r+1)*rowBytes]
				rs, re := pk.runStart[r], pk.runStart[r+1]
				for t := range n {
					q := a.q[t*pc : (t+1)*pc]
					pre := a.prefix[t*(pk.chunks+1) : (t+1)*(pk.chunks+1)]
					var y float32
					c0 := 0
					for k := rs; k < re; k++ {
						c1 := int(pk.runEnd[k])
						var d int32
						switch sel {
						case selVNNI:
							d = dotVNNI(codes, q, pre, c0, c1)
						case selDotProd:
							d = dotDotProd(codes, q, pre, c0, c1)
						case selNEON:
							d = dotNEON(codes, q, pre, c0, c1)
						default:
							d = dotAVX2(codes, q, pre, c0, c1)
						}
						term := float32(float32(d) * pk.runScale[k])
						if k > rs {
							term = float32(y + term)
						}
						y, c0 = term, c1
					}
					out := float32(y * a.rcp[t])
					if pk.hasExtra[r] {
						out = float32(out * pk.extra[r])
					}
					dst[t*rows+r] = out
				}
			}
			return nil
		})
	}
	// KernelLUT: one table per token (tokens outer), rows split across the pool.
	e.lut = grow(e.lut, rowBytes*lutEntries)
	lut := e.lut
	for t := range n {
		q := a.q[t*pc : (t+1)*pc]
		// Building the table is rowBytes*340 additions: split it too when that is large.
		if err := e.pool.run(rowBytes, max(1, minPartWork/(lutEntries*2)), func(lo, hi int) error {
			buildLUT(lut, q, lo, hi)
			return nil
		}); err != nil {
			return err
		}
		out := dst[t*rows : (t+1)*rows]
		rcp := a.rcp[t]
		grain := max(1, minPartWork/max(1, pk.cols))
		if err := e.pool.run(rows, grain, func(lo, hi int) error {
			for r := lo; r < hi; r++ {
				codes := pk.codes[r*rowBytes : (r+1)*rowBytes]
				rs, re := pk.runStart[r], pk.runStart[r+1]
				var y float32
				i0 := 0
				for k := rs; k < re; k++ {
					i1 := int(pk.runEnd[k]) * chunkBytes
					term := float32(float32(dotLUT(lut, codes, i0, i1)) * pk.runScale[k])
					if k > rs {
						term = float32(y + term)
					}
					y, i0 = term, i1
				}
				o := float32(y * rcp)
				if pk.hasExtra[r] {
					o = float32(o * pk.extra[r])
				}
				out[r] = o
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}
