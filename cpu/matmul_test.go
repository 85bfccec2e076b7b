package cpu

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// allKernels lists every ternary kernel, available here or not.
var allKernels = []Kernel{KernelLUT, KernelAVX2, KernelVNNI, KernelNEON, KernelDotProd}

// haveKernel reports whether this CPU (and build) runs kernel k.
func haveKernel(k Kernel) bool {
	switch k {
	case KernelAVX2:
		return haveAVX2
	case KernelVNNI:
		return haveVNNI
	case KernelNEON:
		return haveNEON
	case KernelDotProd:
		return haveDotProd
	}
	return true
}

// kernels lists the kernels this machine runs: the portable one always, AVX2 and AVX-512 VNNI
// or NEON and NEON with the dot product where present.
func kernels() []Kernel {
	var ks []Kernel
	for _, k := range allKernels {
		if haveKernel(k) {
			ks = append(ks, k)
		}
	}
	return ks
}

// requireKernel skips t where this CPU (or build) lacks kernel k.
func requireKernel(t testing.TB, k Kernel) {
	t.Helper()
	if !haveKernel(k) {
		t.Skipf("kernel %s: not supported by this CPU or build", k)
	}
}

// TestKernelResolve: KernelAuto is the fastest kernel the CPU has (VNNI, then AVX2 on amd64; the
// dot product, then NEON on arm64; then the LUT), and asking for a SIMD kernel the CPU lacks is an
// error. Under GODEBUG=cpu.asimddp=off on arm64 (make test-arm64) it is KernelNEON.
func TestKernelResolve(t *testing.T) {
	want := KernelLUT
	switch {
	case haveVNNI:
		want = KernelVNNI
	case haveAVX2:
		want = KernelAVX2
	case haveDotProd:
		want = KernelDotProd
	case haveNEON:
		want = KernelNEON
	}
	got, err := KernelAuto.resolve()
	require.NoError(t, err)
	require.Equal(t, want, got)
	t.Logf("KernelAuto is %s here", got)
	if strings.Contains(os.Getenv("GODEBUG"), "cpu.asimddp=off") {
		// make test-arm64's second run: x/sys/cpu hides the dot product, KernelAuto is NEON.
		require.False(t, haveDotProd, "GODEBUG=cpu.asimddp=off")
		require.Equal(t, haveNEON, got == KernelNEON)
	}
	for _, k := range allKernels {
		got, err := k.resolve()
		if haveKernel(k) {
			require.NoError(t, err, k)
			require.Equal(t, k, got)
		} else {
			require.ErrorContains(t, err, string(k))
		}
	}
	require.True(t, !haveVNNI || haveAVX2, "KernelVNNI's q8_0 head runs dotQ8BlocksAVX2")
	require.True(t, !haveDotProd || haveNEON)
	require.False(t, (haveAVX2 || haveVNNI) && haveNEON, "one architecture's kernels at a time")
}

// dotKernel returns kernel k's Σ t·q over chunks [c0, c1) of a row (codes) and a token (q, its
// chunk prefix sums pre): dotAVX2, dotVNNI, dotNEON, dotDotProd, or dotLUT on a table built for q.
func dotKernel(k Kernel, q []int8, pre []int32) func(codes []byte, c0, c1 int) int32 {
	switch k {
	case KernelAVX2:
		return func(codes []byte, c0, c1 int) int32 { return dotAVX2(codes, q, pre, c0, c1) }
	case KernelVNNI:
		return func(codes []byte, c0, c1 int) int32 { return dotVNNI(codes, q, pre, c0, c1) }
	case KernelNEON:
		return func(codes []byte, c0, c1 int) int32 { return dotNEON(codes, q, pre, c0, c1) }
	case KernelDotProd:
		return func(codes []byte, c0, c1 int) int32 { return dotDotProd(codes, q, pre, c0, c1) }
	}
	lut := make([]int16, len(q)/4*lutEntries)
	buildLUT(lut, q, 0, len(q)/4)
	return func(codes []byte, c0, c1 int) int32 { return dotLUT(lut, codes, c0*chunkBytes, c1*chunkBytes) }
}

// TestDotKernels holds each kernel's int32 sum Σ t·q to the plain sum over every stretch
// [c0, c1) of rows of 1..70 chunks (every remainder of the VNNI kernel's 4-chunk loop, and
// ranges that start mid-row as TQ runs do), for random trits and activations and for the
// extremes: all trits +1 or -1 against activations all -128 or all 127 (the largest lane sums).
// Each kernel is a subtest, skipped where this CPU lacks it.
func TestDotKernels(t *testing.T) {
	for _, k := range allKernels {
		t.Run(string(k), func(t *testing.T) {
			requireKernel(t, k)
			r := rand.New(rand.NewPCG(21, 22))
			for chunks := 1; chunks <= 70; chunks++ {
				cols := chunks * chunkCols
				for fill := range 5 { // 0: random; 1..4: extremes
					trits := randTrits(r, cols)
					q := make([]int8, cols)
					for i := range q {
						q[i] = int8(r.IntN(256) - 128)
					}
					if fill > 0 {
						tv, qv := int8(1-2*((fill-1)&1)), int8(-128)
						if fill > 2 {
							qv = 127
						}
						for i := range trits {
							trits[i], q[i] = tv, qv
						}
					}
					codes := make([]byte, chunks*chunkBytes)
					encodeRow(codes, trits)
					var a acts
					a.set(q, []float32{1}, cols)
					dot := dotKernel(k, a.q, a.prefix)
					check := func(c0, c1 int) {
						var want int32
						for j := c0 * chunkCols; j < c1*chunkCols; j++ {
							want += int32(trits[j]) * int32(q[j])
						}
						require.Equal(t, want, dot(codes, c0, c1), "%d chunks, fill %d, chunks [%d, %d)", chunks, fill, c0, c1)
					}
					for c0 := 0; c0 <= chunks; c0 += max(1, chunks/7) {
						for c1 := c0; c1 <= chunks; c1 += max(1, chunks/9) {
							check(c0, c1)
						}
						check(c0, chunks) // the rest of the row, whatever the steps
					}
				}
			}
		})
	}
}

// TestDotVNNIRange: the VNNI kernel's scaled lanes (code·4^k, see cpu/asm) stay exact at the
// largest magnitude one call allows, vnniMaxChunks chunks of trit +1 (code 2) against q = -128,
// and dotVNNI splits longer stretches into such calls: Σ code·q = 2·(-128)·cols, Σ t·q half that.
func TestDotVNNIRange(t *testing.T) {
	requireKernel(t, KernelVNNI)
	for _, chunks := range []int{vnniMaxChunks, vnniMaxChunks + 5} {
		cols := chunks * chunkCols
		codes := make([]byte, chunks*chunkBytes)
		for i := range codes {
			codes[i] = 0xaa // code 2 (trit +1) in all four slots
		}
		q := make([]int8, cols)
		for i := range q {
			q[i] = -128
		}
		pre := make([]int32, chunks+1)
		for c := range chunks {
			pre[c+1] = pre[c] - 128*chunkCols
		}
		if chunks <= vnniMaxChunks {
			require.Equal(t, int32(-256*cols), dotCodesVNNI(&codes[0], &q[0], chunks))
			require.Equal(t, dotCodesAVX2(&codes[0], &q[0], chunks), dotCodesVNNI(&codes[0], &q[0], chunks))
		}
		require.Equal(t, int32(-128*cols), dotVNNI(codes, q, pre, 0, chunks), "%d chunks", chunks)
		require.Equal(t, dotAVX2(codes, q, pre, 0, chunks), dotVNNI(codes, q, pre, 0, chunks), "%d chunks", chunks)
	}
}

// ternaryTensor encodes trits ([rows][cols]) as typ with weight scale w; for TQ types with
// blockScales every 256-block gets its own scale from r (some equal neighbours, some not, a
// +0/-0 pair included, so runs of equal scales of every kind occur).
func ternaryTensor(t testing.TB, r *rand.Rand, name string, typ model.TensorType, trits []int8, cols, rows int, w float32, blockScales bool) *model.Tensor {
	t.Helper()
	var (
		data []byte
		err  error
	)
	switch typ {
	case model.TypeI2_S:
		data, err = model.EncodeI2S(trits, w)
	case model.TypeTQ1_0, model.TypeTQ2_0:
		scales := make([]float32, len(trits)/model.TQBlockElems)
		for i := range scales {
			scales[i] = w
			if blockScales {
				switch r.IntN(4) {
				case 0: // same as the previous block: a run of two or more
					if i > 0 {
						scales[i] = scales[i-1]
					}
				case 1:
					scales[i] = float32(r.IntN(100)+1) / 64
				case 2:
					scales[i] = 0
					if i > 0 && scales[i-1] == 0 {
						scales[i] = model.F16ToF32(0x8000) // -0 after +0: one run for cpuref
					}
				}
			}
		}
		if typ == model.TypeTQ1_0 {
			data, err = model.EncodeTQ1_0(trits, scales)
		} else {
			data, err = model.EncodeTQ2_0(trits, scales)
		}
	}
	require.NoError(t, err)
	return &model.Tensor{Name: name, Type: typ, Shape: []uint64{uint64(cols), uint64(rows)}, Data: data}
}

func randTrits(r *rand.Rand, n int) []int8 {
	t := make([]int8, n)
	for i := range t {
		t[i] = int8(r.IntN(3)) - 1
	}
	return t
}

// randActs returns n tokens of activations quantized by cpuref (so extremes -128 and 127
// occur) and their scales.
func randActs(t testing.TB, r *rand.Rand, n, cols int) ([]int8, []float32) {
	q := make([]int8, n*cols)
	s := make([]float32, n)
	x := make([]float32, cols)
	for tok := range n {
		for i := range x {
			x[i] = float32(r.NormFloat64()) * float32(tok+1)
		}
		var err error
		s[tok], err = cpuref.QuantizeActivations(q[tok*cols:(tok+1)*cols], x)
		require.NoError(t, err)
	}
	return q, s
}

// TestMatMulParity holds the packed product of every kernel to cpuref.TernaryMatMul bit for bit
// over swept shapes of every ternary type (odd row counts, I2_S widths that are and are not a
// multiple of 128, rows that straddle I2_S blocks), with and without per-block TQ scales and a
// *.scale factor, for 1..9 tokens and GOMAXPROCS-sized pools of 1 and 2 threads. Each kernel
// (LUT, AVX2, AVX-512 VNNI, NEON, NEON dot product) is a subtest over the same inputs, skipped
// where this CPU lacks it.
func TestMatMulParity(t *testing.T) {
	for _, k := range allKernels {
		t.Run(string(k), func(t *testing.T) {
			requireKernel(t, k)
			testMatMulParity(t, k)
		})
	}
}

// testMatMulParity is TestMatMulParity for kernel k.
func testMatMulParity(t *testing.T, k Kernel) {
	r := rand.New(rand.NewPCG(17, 1))
	type shape struct {
		typ        model.TensorType
		rows, cols int
		blocks     bool
	}
	var shapes []shape
	for _, rows := range []int{1, 3, 7, 33, 129} {
		for _, cols := range []int{128, 256, 384, 640, 1280} {
			if rows*cols%model.I2SBlockElems == 0 {
				shapes = append(shapes, shape{model.TypeI2_S, rows, cols, false})
			}
		}
		for _, cols := range []int{256, 512, 768, 1536} {
			for _, typ := range []model.TensorType{model.TypeTQ2_0, model.TypeTQ1_0} {
				shapes = append(shapes, shape{typ, rows, cols, false}, shape{typ, rows, cols, true})
			}
		}
	}
	// I2_S widths that are not a multiple of 128 (rows start inside a block).
	shapes = append(shapes, shape{model.TypeI2_S, 2, 64, false}, shape{model.TypeI2_S, 4, 96, false},
		shape{model.TypeI2_S, 8, 208, false}, shape{model.TypeI2_S, 5, 384 + 128, false},
		// 2B4T-wide rows (54 chunks), so nothing that depends on the row length hides.
		shape{model.TypeI2_S, 3, 6912, false}, shape{model.TypeTQ2_0, 3, 6912, true}, shape{model.TypeTQ1_0, 1, 6912, true})
	for _, threads := range []int{1, 2} {
		p := newPool(threads)
		for _, sh := range shapes {
			for _, n := range []int{1, 2, 9} {
				for _, extra := range []bool{false, true} {
					name := fmt.Sprintf("t%d/%v/%dx%d/blocks=%v/n=%d/extra=%v", threads, sh.typ, sh.rows, sh.cols, sh.blocks, n, extra)
					tt := ternaryTensor(t, r, "w", sh.typ, randTrits(r, sh.rows*sh.cols), sh.cols, sh.rows, 0.75, sh.blocks)
					w, err := model.NewTernaryMatrix(tt)
					require.NoError(t, err, name)
					q, s := randActs(t, r, n, sh.cols)
					want := make([]float32, n*sh.rows)
					require.NoError(t, cpuref.TernaryMatMul(want, w, q, s), name)
					src := source{w: w, scale: 1}
					if extra {
						src = source{w: w, scale: 1.3, extra: true}
						for i := range want {
							want[i] *= src.scale
						}
					}
					pk, err := pack(p, src)
					require.NoError(t, err, name)
					var a acts
					a.set(q, s, sh.cols)
					e := &engine{pool: p, kernel: k}
					got := make([]float32, n*sh.rows)
					require.NoError(t, e.matmul(got, pk, &a), name)
					require.Equal(t, want, got, "%s kernel %s", name, k)
				}
			}
		}
		p.close()
	}
}

// TestMatMulFused checks that stacking projections (q/k/v) gives each one's rows unchanged.
func TestMatMulFused(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const cols = 512
	p := newPool(2)
	defer p.close()
	var srcs []source
	var wants [][]float32
	q, s := randActs(t, r, 3, cols)
	for i, rows := range []int{256, 128, 128} {
		typ := []model.TensorType{model.TypeI2_S, model.TypeTQ2_0, model.TypeTQ1_0}[i]
		w, err := model.NewTernaryMatrix(ternaryTensor(t, r, "w", typ, randTrits(r, rows*cols), cols, rows, float32(i+1)/3, true))
		require.NoError(t, err)
		srcs = append(srcs, source{w: w, scale: 1})
		want := make([]float32, 3*rows)
		require.NoError(t, cpuref.TernaryMatMul(want, w, q, s))
		wants = append(wants, want)
	}
	pk, err := pack(p, srcs...)
	require.NoError(t, err)
	var a acts
	a.set(q, s, cols)
	for _, k := range kernels() {
		e := &engine{pool: p, kernel: k}
		got := make([]float32, 3*pk.rows)
		require.NoError(t, e.matmul(got, pk, &a))
		off := 0
		for i, want := range wants {
			rows := srcs[i].w.Rows
			for tok := range 3 {
				require.Equal(t, want[tok*rows:(tok+1)*rows], got[tok*pk.rows+off:tok*pk.rows+off+rows], "kernel %s projection %d token %d", k, i, tok)
			}
			off += rows
		}
	}
}

// TestPoolParts checks the split: at least grain items a block, every item covered once, the
// first error in block order.
func TestPoolParts(t *testing.T) {
	p := newPool(max(2, runtime.GOMAXPROCS(0)))
	defer p.close()
	for _, n := range []int{1, 2, 3, 10, 1000} {
		for _, grain := range []int{1, 4, 600} {
			seen := make([]int, n)
			require.NoError(t, p.run(n, grain, func(lo, hi int) error {
				if hi-lo < grain && hi-lo < n {
					return fmt.Errorf("part [%d, %d) below grain %d", lo, hi, grain)
				}
				for i := lo; i < hi; i++ {
					seen[i]++
				}
				return nil
			}))
			for i, c := range seen {
				require.Equal(t, 1, c, "n %d grain %d item %d", n, grain, i)
			}
		}
	}
	// The error of the first failing block in block order, whichever thread ran it.
	blocks := p.parts(10, 1)
	require.Greater(t, blocks, 2)
	require.EqualError(t, p.run(10, 1, func(lo, hi int) error {
		if lo > 0 {
			return fmt.Errorf("part at %d", lo)
		}
		return nil
	}), fmt.Sprintf("part at %d", 10/blocks))
}

// TestLogitsQ8Parity holds the q8_0 head (every kernel, 1 and 2 threads) to cpuref.LogitsQ8 bit
// for bit on raw Q8_0 rows covering the whole int8 range (-128 included, which a sign trick
// with VPMADDUBSW would get wrong) and activations including -128, with odd row counts.
func TestLogitsQ8Parity(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	for _, dim := range []int{32, 256, 2560} {
		for _, vocab := range []int{1, 7, 300} {
			data := make([]byte, vocab*dim/model.Q8_0BlockElems*model.Q8_0BlockBytes)
			for i := range data {
				data[i] = byte(r.IntN(256))
			}
			for i := 0; i < len(data); i += model.Q8_0BlockBytes {
				data[i], data[i+1] = byte(r.IntN(256)), byte(r.IntN(0x7c)) // finite f16 scales
				data[i+2] = 0x80                                           // a -128 weight in every block
			}
			e := &model.Tensor{Name: "output.weight", Type: model.TypeQ8_0, Shape: []uint64{uint64(dim), uint64(vocab)}, Data: data}
			q := make([]int8, dim)
			for i := range q {
				q[i] = int8(r.IntN(256) - 128)
			}
			q[0] = -128
			want := make([]float32, vocab)
			require.NoError(t, cpuref.LogitsQ8(want, q, 0.37, e))
			for _, k := range kernels() {
				for _, threads := range []int{1, 2} {
					b := &Backend{out: e, eng: engine{pool: newPool(threads), kernel: k}}
					got := make([]float32, vocab)
					require.NoError(t, b.logitsQ8(got, q, []float32{0.37}))
					require.Equal(t, want, got, "dim %d vocab %d kernel %s threads %d", dim, vocab, k, threads)
					b.eng.pool.close()
				}
			}
		}
	}
}

// TestPoolStallBackoff: a wait for a helper's block longer than stallMin and stallFactor times
// the caller's own block time is a stall; after one the caller runs the next runs alone (not
// published to the helpers, every item still computed once), soloMin of them, doubling while the
// probing runs stall, up to soloMax, and back to soloMin after a run without a stall.
func TestPoolStallBackoff(t *testing.T) {
	us := time.Microsecond
	require.False(t, isStall(40*us, 1*us), "below stallMin")
	require.False(t, isStall(60*us, 20*us), "within stallFactor of the caller's own blocks")
	require.True(t, isStall(100*us, 20*us))
	require.True(t, isStall(3*time.Millisecond, 100*us), "an OS time slice")

	p := newPool(2)
	defer p.close()
	p.noteStall(false)
	require.Equal(t, 0, p.solo)
	want := soloMin
	for range 8 {
		p.noteStall(true)
		require.Equal(t, want, p.solo)
		p.solo = 0 // the solo runs are done; the probing run stalls again
		want = min(2*want, soloMax)
	}
	require.Equal(t, soloMax, want)
	p.noteStall(false)
	require.Equal(t, 0, p.solo)
	p.noteStall(true)
	require.Equal(t, soloMin, p.solo, "reset by a run without a stall")

	p.solo = 3
	before := p.cur.Load()
	for i := range 3 {
		seen := make([]int, 100)
		require.NoError(t, p.run(100, 1, func(lo, hi int) error {
			for j := lo; j < hi; j++ {
				seen[j]++
			}
			return nil
		}))
		require.Equal(t, slices.Repeat([]int{1}, 100), seen)
		require.Equal(t, 2-i, p.solo)
		require.Same(t, before, p.cur.Load(), "a solo run is not published to the helpers")
	}
}

// TestPoolDetectsStall: a helper that holds its block far longer than the caller's blocks take
// (as when the OS preempts it) makes run note a stall and back off.
func TestPoolDetectsStall(t *testing.T) {
	p := newPool(2)
	defer p.close()
	caller := goid()
	var helped atomic.Bool
	var once sync.Once
	claimed := make(chan struct{})
	require.NoError(t, p.run(8, 1, func(lo, hi int) error {
		if goid() != caller {
			helped.Store(true)
			once.Do(func() { close(claimed) })
			time.Sleep(300 * time.Millisecond) // a helper preempted mid-block
			return nil
		}
		// The caller's blocks wait until the helper holds one (however busy the machine), so its
		// mean block time is at most that wait over its 7 blocks: far below a quarter of the
		// helper's 300 ms unless the helper took over half a second to wake.
		select {
		case <-claimed:
		case <-time.After(10 * time.Second):
		}
		return nil
	}))
	require.True(t, helped.Load(), "the helper took a block")
	require.Equal(t, soloMin, p.solo)
}

// goid returns the current goroutine's id (from its stack header), to tell the caller from the
// helpers in tests.
func goid() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
}
