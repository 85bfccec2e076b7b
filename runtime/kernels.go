//go:build cgo

package runtime

import (
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/bitgpu/bitgpu/shaders"
)

// kernelDef names a kernel, its shader variants in order of preference with the feature each
// needs, its bindings, which it writes, and its push-constant size in bytes.
type kernelDef struct {
	name     string
	variants []variant
	bindings int
	outputs  []int
	push     uint32
	spec     []uint32 // specialization constants from id gpu.SpecFirstCustom on
	local    uint32   // workgroup size; 0 means gpu.NewKernel's default (256)
	// units marks ternary_matmul.comp's kernels: their constants are TOKENS, GLU, PACKING (spec,
	// padded with 0) and then UNITS, the device's Kernels.units (specOf).
	units bool
}

type variant struct {
	spv  string
	need func(gpu.Features) bool // nil: any device
}

var kernelDefs = []kernelDef{
	{name: "copy", variants: []variant{{spv: "copy"}}, bindings: 2, outputs: []int{1}, push: 4},
	{name: "add", variants: []variant{{spv: "add"}}, bindings: 3, outputs: []int{2}, push: 4},
	{name: "scale", variants: []variant{{spv: "scale"}}, bindings: 2, outputs: []int{1}, push: 12},
	{name: "reduce_sum", variants: []variant{
		{spv: "reduce_sum_subgroup", need: func(f gpu.Features) bool { return f.SubgroupArithmetic }},
		{spv: "reduce_sum_shared"},
	}, bindings: 2, outputs: []int{1}, push: 12},
}

// Kernels holds the compute pipelines bitgpu uses on one device, each built from the best shader
// variant the device's features allow, on first use: a model's recorded steps build what they
// dispatch (pipeline compilation is most of a Kernels' cost — seconds on a software driver), and
// a kernel nothing dispatches is never compiled.
type Kernels struct {
	dev     *gpu.Device
	variant map[string]string // kernel name -> chosen SPIR-V variant

	// units is how many units (rows, GLU pairs, RoPE quads) a workgroup of the subgroup
	// variants of ternary_matmul.comp covers (its UNITS constant; gemvUnits); unitLoop its
	// UNIT_LOOP: 0 where the device's subgroup size is fixed (gpu.Info: minimum = maximum =
	// default) and units is 256 / that size — every subgroup then has exactly one unit — else 1,
	// the loop that holds for any size the driver picks.
	units, unitLoop uint32

	mu     sync.Mutex
	byName map[string]*gpu.Kernel // kernelDefs' pipelines built so far (kernel)
	tiles  map[string]*gpu.Kernel // respecialized pipelines (smaller GEMM tiles, packings), built on first use
}

// specOf is the specialization constants of a pipeline of def built from spec: spec itself, or,
// for ternary_matmul.comp's kernels (def.units), spec padded to TOKENS, GLU, PACKING followed
// by UNITS and UNIT_LOOP.
func (ks *Kernels) specOf(def kernelDef, spec []uint32) []uint32 {
	if !def.units {
		return spec
	}
	out := make([]uint32, 5)
	copy(out, spec)
	out[3], out[4] = ks.units, ks.unitLoop
	return out
}

// NewKernels chooses, for every kernel, the SPIR-V variant dev's features allow (the pipelines
// are built on first use: kernel). A missing variant is an error naming it.
func NewKernels(dev *gpu.Device) (*Kernels, error) {
	ks := &Kernels{dev: dev, byName: map[string]*gpu.Kernel{}, variant: map[string]string{}, tiles: map[string]*gpu.Kernel{}}
	var err error
	info := dev.Info()
	if ks.units, err = gemvUnits(info, os.Getenv("BITGPU_GEMV_UNITS")); err != nil {
		return nil, err
	}
	ks.unitLoop = 1
	if sg := info.SubgroupSize; sg != 0 && info.MinSubgroupSize == sg && info.MaxSubgroupSize == sg && ks.units == 256/sg {
		ks.unitLoop = 0
	}
	feats := dev.Info().Features
	for _, def := range kernelDefs {
		var chosen string
		for _, v := range def.variants {
			if v.need == nil || v.need(feats) {
				chosen = v.spv
				break
			}
		}
		if _, err := shaders.SPIRV(chosen); err != nil {
			return nil, err
		}
		ks.variant[def.name] = chosen
	}
	return ks, nil
}

// kernel returns kernel name's pipeline (a kernelDefs entry), built on first use from the variant
// NewKernels chose. Errors name the kernel.
func (ks *Kernels) kernel(name string) (*gpu.Kernel, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if k := ks.byName[name]; k != nil {
		return k, nil
	}
	i := slices.IndexFunc(kernelDefs, func(d kernelDef) bool { return d.name == name })
	if i < 0 {
		return nil, fmt.Errorf("kernel %s: not defined", name)
	}
	def := kernelDefs[i]
	code, err := shaders.SPIRV(ks.variant[name])
	if err != nil {
		return nil, err
	}
	k, err := ks.dev.NewKernel(gpu.KernelSpec{Name: def.name, SPIRV: code, Bindings: def.bindings, Outputs: def.outputs, PushSize: def.push, Spec: ks.specOf(def, def.spec), LocalSize: [2]uint32{def.local, 1}})
	if err != nil {
		return nil, err
	}
	ks.byName[name] = k
	return k, nil
}

// dispatch records kernel name (built on first use) over groups with push constants push and
// buffers bufs.
func (ks *Kernels) dispatch(s *gpu.Sequence, name string, groups [3]uint32, push []uint32, bufs ...gpu.Range) error {
	k, err := ks.kernel(name)
	if err != nil {
		return err
	}
	return s.Dispatch(k, groups, push, bufs...)
}

// Variant reports which SPIR-V variant kernel name was built from ("" if unknown).
func (ks *Kernels) Variant(name string) string { return ks.variant[name] }

// Release destroys every pipeline built so far.
func (ks *Kernels) Release() {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	for _, k := range ks.byName {
		k.Release()
	}
	ks.byName = map[string]*gpu.Kernel{}
	for _, k := range ks.tiles {
		k.Release()
	}
	ks.tiles = map[string]*gpu.Kernel{}
}

// gemmTile is the token tile of a GEMM over t > 1 tokens: 2 or 4 when t fits one such tile, else
// GEMMTokens. A tile's unused token slots are skipped but not free — on lavapipe the 8-token
// kernel over 2 tokens took 2.9x the one-token GEMV, the 2-token kernel 1.4x
// (BenchmarkPagedDecodeBatch) — and the batched decode steps of a few sequences are such GEMMs.
// Each token's arithmetic is the same in every tile, so the tile never changes a bit.
func gemmTile(t uint32) uint32 {
	switch {
	case t <= 2:
		return 2
	case t <= 4:
		return 4
	}
	return GEMMTokens
}

// tiled returns GEMM kernel name (a kernelDefs entry whose first specialization constant is the
// token tile, built for GEMMTokens) specialized for tile tokens from the same SPIR-V variant: the
// kernel NewKernels built when tile is GEMMTokens, otherwise one built on first use.
func (ks *Kernels) tiled(name string, tile uint32) (*gpu.Kernel, error) {
	if tile == GEMMTokens {
		return ks.kernel(name)
	}
	return ks.respecialized(name, "", fmt.Sprintf("%s/%d", name, tile), "a token-tiled GEMM", 1, func(spec []uint32) { spec[0] = tile })
}

// respecialized returns the pipeline kept as key: kernel name's SPIR-V variant (a kernelDefs
// entry with at least one specialization constant, what), or the module spv when not "", with
// its constants padded to n and changed by set, built on first use and kept with the others
// (Release frees them).
func (ks *Kernels) respecialized(name, spv, key, what string, n int, set func(spec []uint32)) (*gpu.Kernel, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if k := ks.tiles[key]; k != nil {
		return k, nil
	}
	i := slices.IndexFunc(kernelDefs, func(d kernelDef) bool { return d.name == name })
	if i < 0 || len(kernelDefs[i].spec) == 0 {
		return nil, fmt.Errorf("kernel %s: not %s", name, what)
	}
	def := kernelDefs[i]
	if spv == "" {
		spv = ks.variant[name]
	}
	code, err := shaders.SPIRV(spv)
	if err != nil {
		return nil, err
	}
	spec := make([]uint32, max(n, len(def.spec)))
	copy(spec, def.spec)
	set(spec)
	k, err := ks.dev.NewKernel(gpu.KernelSpec{Name: key, SPIRV: code, Bindings: def.bindings, Outputs: def.outputs, PushSize: def.push, Spec: ks.specOf(def, spec), LocalSize: [2]uint32{def.local, 1}})
	if err != nil {
		return nil, err
	}
	ks.tiles[key] = k
	return k, nil
}

// matmulKernel returns the kernel of a matrix product over t tokens: gemv (one token) or gemm
// with its token tile (gemmTile); name is the kernel's kernelDefs name.
func (ks *Kernels) matmulKernel(gemv, gemm string, t uint32) (k *gpu.Kernel, name string, tile uint32, err error) {
	if t <= 1 {
		k, err = ks.kernel(gemv)
		return k, gemv, 1, err
	}
	tile = gemmTile(t)
	k, err = ks.tiled(gemm, tile)
	return k, gemm, tile, err
}

// groups1D is the workgroup count of a grid-stride kernel over n items with local size 256:
// enough groups to cover n once, capped at maxGroups (the shader loops over the rest).
func groups1D(n uint32) [3]uint32 {
	const maxGroups = 4096
	g := (n + 255) / 256
	if g > maxGroups {
		g = maxGroups
	}
	if g == 0 {
		g = 1
	}
	return [3]uint32{g, 1, 1}
}

func checkLen(op string, n uint32, rs ...gpu.Range) error {
	for i, r := range rs {
		if r.Size < 4*uint64(n) {
			return fmt.Errorf("%s: operand %d holds %d bytes, need %d for %d elements", op, i, r.Size, 4*n, n)
		}
	}
	return nil
}

// Copy records dst[i] = src[i] for n 32-bit words.
func (ks *Kernels) Copy(s *gpu.Sequence, src, dst gpu.Range, n uint32) error {
	if err := checkLen("copy", n, src, dst); err != nil {
		return err
	}
	return ks.dispatch(s, "copy", groups1D((n+3)/4), []uint32{n}, src, dst)
}

// Add records c[i] = a[i] + b[i] for n float32 values.
func (ks *Kernels) Add(s *gpu.Sequence, a, b, c gpu.Range, n uint32) error {
	if err := checkLen("add", n, a, b, c); err != nil {
		return err
	}
	return ks.dispatch(s, "add", groups1D(n), []uint32{n}, a, b, c)
}

// Scale records y[i] = x[i] * alpha for n float32 values.
func (ks *Kernels) Scale(s *gpu.Sequence, x, y gpu.Range, n uint32, alpha float32) error {
	if err := checkLen("scale", n, x, y); err != nil {
		return err
	}
	return ks.dispatch(s, "scale", groups1D(n), []uint32{n, gpu.F32(alpha), 0xffffffff}, x, y)
}

// ReduceSumScratch is the number of float32 values of scratch ReduceSum needs for n inputs:
// the result, then two ping-pong areas for the partial sums.
func ReduceSumScratch(n uint32) uint32 {
	g := groups1D(n)[0]
	return 1 + g + groups1D(g)[0]
}

// ReduceSum records passes summing the n float32 values of x into scratch[0]; scratch must hold
// ReduceSumScratch(n) values and must not overlap x. Each pass writes one partial sum per
// workgroup; passes repeat until one value is left. The summation order differs from a
// sequential loop (the parity test states the error bound).
func (ks *Kernels) ReduceSum(s *gpu.Sequence, x, scratch gpu.Range, n uint32) error {
	if n == 0 {
		return fmt.Errorf("reduce_sum: no elements")
	}
	if err := checkLen("reduce_sum", n, x); err != nil {
		return err
	}
	if err := checkLen("reduce_sum scratch", ReduceSumScratch(n), scratch); err != nil {
		return err
	}
	k, err := ks.kernel("reduce_sum")
	if err != nil {
		return err
	}
	g0 := groups1D(n)[0]
	areas := [2]uint32{1, 1 + g0} // ping-pong areas for partial sums, after the result slot
	in, inOff, count, out := x, uint32(0), n, 0
	for {
		g := groups1D(count)
		outOff := areas[out]
		if g[0] == 1 {
			outOff = 0
		}
		if err := s.Dispatch(k, g, []uint32{count, inOff, outOff}, in, scratch); err != nil {
			return err
		}
		if g[0] == 1 {
			return nil
		}
		in, inOff, count, out = scratch, outOff, g[0], 1-out
	}
}
