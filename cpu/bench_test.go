package cpu

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"path/filepath"
	goruntime "runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/internal/benchloop"
	"github.com/bitgpu/bitgpu/model"
)

// benchShapes are the 2B4T projection shapes (rows x cols): q/o, gate/up, down.
var benchShapes = [][2]int{{2560, 2560}, {6912, 2560}, {2560, 6912}, {256, 2560}, {128, 6912}}

// BenchmarkKernel times one token's GEMV on the 2B4T shapes, one thread, for each kernel: the
// AVX-512 VNNI, AVX2 and LUT kernels on the packed layout (those this CPU runs, in one run, so
// that their ratios compare like with like: -bench 'Kernel/.*/(avx2|avx512vnni)$' for the two
// SIMD ones), cpuref.TernaryMatMul straight from I2_S (its LUT path; it splits rows over
// GOMAXPROCS goroutines, so run with -cpu 1 to compare threads alike), and a portable
// bit-plane/popcount kernel kept only here for comparison. It reports weights/ns.
func BenchmarkKernel(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, sh := range benchShapes {
		rows, cols := sh[0], sh[1]
		trits := randTrits(r, rows*cols)
		w, err := model.NewTernaryMatrix(ternaryTensor(b, r, "w", model.TypeI2_S, trits, cols, rows, 0.5, false))
		require.NoError(b, err)
		q, s := randActs(b, r, 1, cols)
		p := newPool(1)
		pk, err := pack(p, source{w: w, scale: 1})
		require.NoError(b, err)
		var a acts
		a.set(q, s, cols)
		dst := make([]float32, rows)
		report := func(b *testing.B) {
			b.ReportMetric(float64(rows*cols)*float64(b.N)/float64(b.Elapsed().Nanoseconds()), "weights/ns")
		}
		for _, k := range kernels() {
			b.Run(fmt.Sprintf("%dx%d/%s", rows, cols, k), func(b *testing.B) {
				e := &engine{pool: p, kernel: k}
				for b.Loop() {
					require.NoError(b, e.matmul(dst, pk, &a))
				}
				report(b)
			})
		}
		b.Run(fmt.Sprintf("%dx%d/cpuref", rows, cols), func(b *testing.B) {
			for b.Loop() {
				require.NoError(b, cpuref.TernaryMatMul(dst, w, q, s))
			}
			report(b)
		})
		b.Run(fmt.Sprintf("%dx%d/bitplane", rows, cols), func(b *testing.B) {
			pos, neg := bitplaneWeights(trits, rows, cols)
			words := cols / 64
			planes := make([]uint64, words*8)
			for b.Loop() {
				bitplaneActs(planes, q)
				for row := range rows {
					dst[row] = float32(dotPlanes(pos[row*words:(row+1)*words], neg[row*words:(row+1)*words], planes))
				}
			}
			report(b)
		})
		p.close()
	}
}

// bitplaneWeights packs trits ([rows][cols], cols a multiple of 64) into +1 and -1 bit masks.
func bitplaneWeights(trits []int8, rows, cols int) (pos, neg []uint64) {
	pos = make([]uint64, rows*cols/64)
	neg = make([]uint64, rows*cols/64)
	for i, t := range trits {
		switch t {
		case 1:
			pos[i/64] |= 1 << (i % 64)
		case -1:
			neg[i/64] |= 1 << (i % 64)
		}
	}
	return pos, neg
}

// bitplaneActs splits q+128 (0..255) into 8 bit planes per 64 columns: planes[w*8+k] bit j is
// bit k of q[64w+j]+128.
func bitplaneActs(planes []uint64, q []int8) {
	clear(planes)
	for j, v := range q {
		u := uint8(int16(v) + 128)
		w := j / 64
		for k := range 8 {
			planes[w*8+k] |= uint64(u>>k&1) << (j % 64)
		}
	}
}

// dotPlanes returns Σ t·q = Σ_k 2^k (pop(P&B_k) − pop(N&B_k)) − 128 (pop(P) − pop(N)).
func dotPlanes(pos, neg, planes []uint64) int32 {
	var cnt [8]int
	tsum := 0
	for w, pw := range pos {
		nw := neg[w]
		pl := planes[w*8 : w*8+8 : w*8+8]
		for k := range 8 {
			cnt[k] += bits.OnesCount64(pw&pl[k]) - bits.OnesCount64(nw&pl[k])
		}
		tsum += bits.OnesCount64(pw) - bits.OnesCount64(nw)
	}
	acc := -128 * tsum
	for k, c := range cnt {
		acc += c << k
	}
	return int32(acc)
}

// TestBitplaneKernel keeps the benchmark-only bit-plane kernel honest: it must give cpuref's
// exact sums.
func TestBitplaneKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const rows, cols = 5, 256
	trits := randTrits(r, rows*cols)
	q, _ := randActs(t, r, 1, cols)
	pos, neg := bitplaneWeights(trits, rows, cols)
	planes := make([]uint64, cols/64*8)
	bitplaneActs(planes, q)
	for row := range rows {
		var want int32
		for j := range cols {
			want += int32(trits[row*cols+j]) * int32(q[j])
		}
		require.Equal(t, want, dotPlanes(pos[row*cols/64:(row+1)*cols/64], neg[row*cols/64:(row+1)*cols/64], planes))
	}
}

// decoder is what the decode benchmarks drive: either backend.
type decoder interface {
	Prefill([]int, bool) ([]float32, error)
	Decode(int) ([]float32, error)
	Reset()
	Close() error
}

// benchDecode times decode steps (tok/s) of m on cpuref and on this package's backend, at 1 and
// 2 threads (GOMAXPROCS for cpuref, whose parallelRows follows it; WithThreads here), in one run
// so the ratios compare like with like. Each op is one decode step after an 8-token prompt; the
// cache is reset every 32 steps so the context stays short.
func benchDecode(b *testing.B, m *model.Model) {
	for _, threads := range []int{1, 2} {
		for _, name := range []string{"cpuref", "cpu"} {
			b.Run(fmt.Sprintf("%s/threads=%d", name, threads), func(b *testing.B) {
				defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(threads))
				var (
					d   decoder
					err error
				)
				if name == "cpuref" {
					d, err = cpuref.New(m, 64)
				} else {
					d, err = New(m, 64, WithThreads(threads))
				}
				require.NoError(b, err)
				defer d.Close()
				benchloop.Decode(b, d)
			})
		}
	}
}

// BenchmarkDecodeTiny: the tiny synthetic preset (dim 256, 2 layers, vocab 300).
func BenchmarkDecodeTiny(b *testing.B) {
	o, err := model.SynthPreset("tiny")
	require.NoError(b, err)
	benchDecode(b, synthB(b, o))
}

// BenchmarkDecodeBuiltin: the built-in model (dim 256, 4 layers, vocab 768).
func BenchmarkDecodeBuiltin(b *testing.B) {
	m, err := assets.Open()
	require.NoError(b, err)
	benchDecode(b, m)
}

// BenchmarkDecode2B4TLayer: one transformer block of BitNet b1.58 2B4T's shapes (dim 2560, 20
// heads, 5 KV heads, FFN 6912) with a 300-token vocabulary, so the time is the layer's: ×30 for
// the model's 30 layers, plus the LM head (BenchmarkLMHead2B4T).
func BenchmarkDecode2B4TLayer(b *testing.B) {
	o, err := model.SynthPreset("2b4t")
	require.NoError(b, err)
	o.Layers, o.Vocab, o.Ctx = 1, 300, 256
	benchDecode(b, synthB(b, o))
}

// BenchmarkLMHead2B4T times the logits GEMV of 2B4T's width (2560) over 16384 vocabulary rows
// (1/7.8 of 2B4T's 128256), at 1 and 2 threads, for the q8_0 head (cpuref.LogitsQ8 against
// logitsQ8) and the F16 head (cpuref.Logits against logitF16).
func BenchmarkLMHead2B4T(b *testing.B) {
	const dim, vocab = 2560, 16384
	r := rand.New(rand.NewPCG(9, 9))
	vals := make([]float32, dim*vocab)
	for i := range vals {
		vals[i] = float32(r.NormFloat64()) / 16
	}
	e := &model.Tensor{Name: "output.weight", Type: model.TypeF16, Shape: []uint64{dim, vocab}, Data: model.EncodeF16(vals)}
	x := vals[:dim]
	dst := make([]float32, vocab)
	e8, err := model.QuantizeQ8_0Matrix(e)
	require.NoError(b, err)
	qx := make([]int8, dim)
	s, err := cpuref.QuantizeActivations(qx, x)
	require.NoError(b, err)
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("q8_0/cpuref/threads=%d", threads), func(b *testing.B) {
			defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(threads))
			for b.Loop() {
				require.NoError(b, cpuref.LogitsQ8(dst, qx, s, e8))
			}
		})
		b.Run(fmt.Sprintf("q8_0/cpu/threads=%d", threads), func(b *testing.B) {
			k, err := KernelAuto.resolve()
			require.NoError(b, err)
			bk := &Backend{out: e8, eng: engine{pool: newPool(threads), kernel: k}}
			defer bk.eng.pool.close()
			for b.Loop() {
				require.NoError(b, bk.logitsQ8(dst, qx, []float32{s}))
			}
		})
		b.Run(fmt.Sprintf("f16/cpuref/threads=%d", threads), func(b *testing.B) {
			defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(threads))
			for b.Loop() {
				require.NoError(b, cpuref.Logits(dst, x, e))
			}
		})
		b.Run(fmt.Sprintf("f16/cpu/threads=%d", threads), func(b *testing.B) {
			p := newPool(threads)
			defer p.close()
			for b.Loop() {
				require.NoError(b, p.run(vocab, minPartWork/dim, func(lo, hi int) error {
					for v := lo; v < hi; v++ {
						dst[v] = logitF16(x, e.Data[2*v*dim:2*(v+1)*dim])
					}
					return nil
				}))
			}
		})
	}
}

// synthB writes and opens a synthetic model for a benchmark.
func synthB(b *testing.B, o model.SynthOptions) *model.Model {
	b.Helper()
	path := filepath.Join(b.TempDir(), "m.gguf")
	require.NoError(b, model.WriteSynthetic(path, o))
	m, err := model.Open(path)
	require.NoError(b, err)
	b.Cleanup(func() { m.Close() })
	return m
}
