//go:build cgo

package gpu

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	vk "github.com/goki/vulkan"
	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/shaders"
)

// openTest opens the default device with validation on and fails the test if the validation
// layer reports anything by the time the device is closed (leaks included). Without a Vulkan
// device the test is skipped, unless BITGPU_REQUIRE_GPU=1 (as `make test` sets), where it fails.
func openTest(t *testing.T, opts ...func(*Options)) *Device {
	t.Helper()
	d := openValidated(t, opts...)
	t.Cleanup(func() {
		require.NoError(t, d.Close())
		require.Empty(t, d.ValidationMessages(), "validation layer messages")
	})
	return d
}

// openValidated opens the default device with validation on (opts edit the options), skipping
// the test without a Vulkan device unless BITGPU_REQUIRE_GPU=1; the caller closes it and reads
// its validation messages.
func openValidated(t *testing.T, opts ...func(*Options)) *Device {
	t.Helper()
	o := OptionsFromEnv()
	o.Validate = true
	for _, f := range opts {
		f(&o)
	}
	d, err := Open(o)
	if errors.Is(err, ErrNoDevice) && os.Getenv("BITGPU_REQUIRE_GPU") != "1" {
		t.Skipf("no Vulkan device: %v", err)
	}
	require.NoError(t, err)
	return d
}

func kernel(t *testing.T, d *Device, name string, bindings int, outputs []int, push uint32) *Kernel {
	t.Helper()
	code, err := shaders.SPIRV(name)
	require.NoError(t, err)
	k, err := d.NewKernel(KernelSpec{Name: name, SPIRV: code, Bindings: bindings, Outputs: outputs, PushSize: push})
	require.NoError(t, err)
	t.Cleanup(k.Release)
	return k
}

func TestInfo(t *testing.T) {
	d := openTest(t)
	in := d.Info()
	t.Logf("device: %s, subgroup %d, maxStorageBufferRange %d, features %+v", in, in.SubgroupSize, in.MaxStorageBufferRange, in.Features)
	require.NotEmpty(t, in.Name)
	require.Contains(t, []string{"discrete", "integrated", "virtual", "cpu", "other"}, in.Type)
	require.GreaterOrEqual(t, in.SubgroupSize, uint32(1))
	require.Equal(t, in.SubgroupSize&(in.SubgroupSize-1), uint32(0), "subgroup size is a power of two")
	require.GreaterOrEqual(t, in.MaxStorageBufferRange, uint64(1<<27), "Vulkan requires at least 2^27 bytes")
	require.GreaterOrEqual(t, in.MaxWorkgroupInvocations, uint32(128))
	require.GreaterOrEqual(t, in.MaxSharedMemory, uint32(16384))
	require.NotEmpty(t, in.Heaps)
	require.Positive(t, in.TimestampPeriod)
}

func TestEnumerateMatchesOpen(t *testing.T) {
	d := openTest(t)
	infos, err := Enumerate()
	require.NoError(t, err)
	require.NotEmpty(t, infos)
	found := false
	for _, in := range infos {
		found = found || in.Name == d.Info().Name
	}
	require.True(t, found)
}

func TestSelect(t *testing.T) {
	infos := []Info{{Name: "llvmpipe", Type: "cpu"}, {Name: "GeForce", Type: "discrete"}, {Name: "Iris", Type: "integrated"}}
	i, err := Choose(infos, "")
	require.NoError(t, err)
	require.Equal(t, 1, i, "discrete first")
	i, err = Choose([]Info{{Type: "cpu"}, {Type: "virtual"}, {Type: "integrated"}}, "")
	require.NoError(t, err)
	require.Equal(t, 2, i)
	i, err = Choose(infos, "2")
	require.NoError(t, err)
	require.Equal(t, 2, i)
	i, err = Choose(infos, "LLVM")
	require.NoError(t, err)
	require.Equal(t, 0, i)
	_, err = Choose(infos, "7")
	require.ErrorContains(t, err, "BITGPU_DEVICE=7")
	_, err = Choose(infos, "radeon")
	require.ErrorContains(t, err, "radeon")
}

// TestValidationMessengerIsLive provokes a validation error on a throw-away device (a buffer of
// size 0, VUID-VkBufferCreateInfo-size-00912) and requires the messenger to deliver it.
func TestValidationMessengerIsLive(t *testing.T) {
	d := openValidated(t)
	var buf vk.Buffer
	r := vk.CreateBuffer(d.dev, &vk.BufferCreateInfo{
		SType: vk.StructureTypeBufferCreateInfo, Size: 0,
		Usage: vk.BufferUsageFlags(vk.BufferUsageStorageBufferBit), SharingMode: vk.SharingModeExclusive,
	}, nil, &buf)
	if r == vk.Success && buf != nil {
		vk.DestroyBuffer(d.dev, buf, nil)
	}
	require.NoError(t, d.Close())
	msgs := d.ValidationMessages()
	require.NotEmpty(t, msgs)
	require.True(t, strings.Contains(strings.Join(msgs, "\n"), "VUID-VkBufferCreateInfo-size"), "messages: %v", msgs)
}

func TestDisableUnknownFeature(t *testing.T) {
	_, err := Open(Options{Disable: []string{"warp-drive"}})
	if errors.Is(err, ErrNoDevice) && os.Getenv("BITGPU_REQUIRE_GPU") != "1" {
		t.Skip("no Vulkan device")
	}
	require.ErrorContains(t, err, "warp-drive")
}

func TestBufferRoundTrip(t *testing.T) {
	for _, staging := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "staging"}[staging], func(t *testing.T) {
			d := openTest(t)
			d.forceStaging = staging
			f := []float32{1.5, -2, float32(math.Inf(1)), 0}
			b, err := NewBufferFrom(d, f)
			require.NoError(t, err)
			require.Equal(t, !staging || b.HostVisible(), b.HostVisible())
			got, err := Read[float32](b, 0, 4)
			require.NoError(t, err)
			require.Equal(t, f, got)
			// Sub-range write and read.
			require.NoError(t, Write(b, 2, []float32{7, 8}))
			got, err = Read[float32](b, 1, 3)
			require.NoError(t, err)
			require.Equal(t, []float32{-2, 7, 8}, got)

			i8 := []int8{-128, -1, 0, 1, 127}
			bi, err := NewBufferFrom(d, i8)
			require.NoError(t, err)
			gi, err := Read[int8](bi, 0, 5)
			require.NoError(t, err)
			require.Equal(t, i8, gi)
			u16 := []uint16{0, 1, 0xffff}
			bu, err := NewBufferFrom(d, u16)
			require.NoError(t, err)
			gu, err := Read[uint16](bu, 1, 2)
			require.NoError(t, err)
			require.Equal(t, []uint16{1, 0xffff}, gu)
			u32 := []uint32{0xdeadbeef, 42}
			bw, err := NewBufferFrom(d, u32)
			require.NoError(t, err)
			gw, err := Read[uint32](bw, 0, 2)
			require.NoError(t, err)
			require.Equal(t, u32, gw)

			// Larger than the staging buffer: goes through in chunks.
			big := make([]uint32, stagingSize/4*2+5)
			for i := range big {
				big[i] = uint32(i * 2654435761)
			}
			bb, err := NewBufferFrom(d, big)
			require.NoError(t, err)
			gb, err := Read[uint32](bb, 0, len(big))
			require.NoError(t, err)
			require.Equal(t, big, gb)

			_, err = Read[float32](b, 3, 2)
			require.ErrorContains(t, err, "outside buffer of 16 bytes")
			require.ErrorContains(t, Write(b, 4, []float32{1}), "offset 16")
			bb.Release()
			bb.Release()
			_, err = Read[uint32](bb, 0, 1)
			require.ErrorContains(t, err, "released")
			for _, x := range []*Buffer{b, bi, bu, bw} {
				x.Release()
			}
		})
	}
}

func TestAllocatorSubAllocates(t *testing.T) {
	d := openTest(t)
	inUse0, _ := d.MemoryInUse()
	var bufs []*Buffer
	for i := 0; i < 100; i++ {
		b, err := d.NewBuffer(uint64(1000 + i))
		require.NoError(t, err)
		bufs = append(bufs, b)
	}
	inUse, reserved := d.MemoryInUse()
	require.GreaterOrEqual(t, inUse-inUse0, uint64(100*1000))
	require.LessOrEqual(t, reserved, uint64(2*blockSize), "100 small buffers fit in one or two blocks")
	for _, b := range bufs {
		b.Release()
	}
	inUse2, _ := d.MemoryInUse()
	require.Equal(t, inUse0, inUse2)
	// Freed space is reused: the block list does not grow.
	_, reserved2 := d.MemoryInUse()
	b, err := d.NewBuffer(50000)
	require.NoError(t, err)
	_, reserved3 := d.MemoryInUse()
	require.Equal(t, reserved2, reserved3)
	b.Release()
	_, err = d.NewBuffer(0)
	require.ErrorContains(t, err, "0 bytes")
}

func TestOutOfMemoryIsAnError(t *testing.T) {
	d := openTest(t)
	var largest uint64
	for _, h := range d.Info().Heaps {
		largest = max(largest, h.Size)
	}
	_, err := d.NewBuffer(largest + 1<<30)
	require.Error(t, err)
	require.Contains(t, err.Error(), "GiB")
}

func TestSequenceReplayWithStepValues(t *testing.T) {
	d := openTest(t)
	k := kernel(t, d, "scale", 2, []int{1}, 12)
	x, err := NewBufferFrom(d, []float32{1, 2, 3})
	require.NoError(t, err)
	defer x.Release()
	y, err := d.NewBuffer(12)
	require.NoError(t, err)
	defer y.Release()
	s, err := d.NewSequence()
	require.NoError(t, err)
	defer s.Release()
	require.NoError(t, s.Dispatch(k, [3]uint32{1, 1, 1}, []uint32{3, F32(0), 5}, x.Whole(), y.Whole()))
	for _, alpha := range []float32{2, -0.5, 10} {
		require.NoError(t, s.SetStep(5, math.Float32bits(alpha)))
		require.NoError(t, s.Submit())
		got, err := Read[float32](y, 0, 3)
		require.NoError(t, err)
		require.Equal(t, []float32{alpha, 2 * alpha, 3 * alpha}, got)
	}
	require.ErrorContains(t, s.Dispatch(k, [3]uint32{1, 1, 1}, []uint32{3, F32(1), 0xffffffff}, x.Whole(), y.Whole()), "already submitted")
	require.ErrorContains(t, s.SetStep(16, 0), "slot 16")
	// Reset and record anew with the push-constant factor.
	require.NoError(t, s.Reset())
	require.NoError(t, s.Dispatch(k, [3]uint32{1, 1, 1}, []uint32{3, F32(4), 0xffffffff}, x.Whole(), y.Whole()))
	require.NoError(t, s.Submit())
	got, err := Read[float32](y, 0, 3)
	require.NoError(t, err)
	require.Equal(t, []float32{4, 8, 12}, got)
}

// TestBarriersOrderDependentDispatches chains y = x*2; z = y + x; y = x*7; y = z*3 (a
// read-after-write on y, a write-after-read alone on y, then a read-after-write on z with a
// write-after-write on y) in one sequence, 20 times over. The software
// drivers run dispatches in order whatever the barriers, so the values alone cannot show a missing
// barrier; synchronization validation (on in openTest) does: it reports a SYNC-HAZARD for any
// dependent pair without one, which fails the test (TestMissingBarrierIsReported shows it does).
func TestBarriersOrderDependentDispatches(t *testing.T) {
	d := openTest(t)
	recordChain(t, d, false)
}

// TestMissingBarrierIsReported records the chain of TestBarriersOrderDependentDispatches with the
// automatic barriers dropped and requires synchronization validation to report the hazards: the
// proof that the barrier test above would fail if Dispatch stopped inserting them.
func TestMissingBarrierIsReported(t *testing.T) {
	d := openValidated(t)
	recordChain(t, d, true)
	require.NoError(t, d.Close())
	msgs := strings.Join(d.ValidationMessages(), "\n")
	require.Contains(t, msgs, "SYNC-HAZARD-READ-AFTER-WRITE", "messages: %s", msgs)
	require.Contains(t, msgs, "SYNC-HAZARD-WRITE-AFTER-READ", "messages: %s", msgs)
}

// recordChain runs y = x*2; z = y + x; y = x*7; y = z*3 twenty times in one sequence, without the
// automatic barriers when dropBarriers, checks y = 9x when it may, and releases what it made.
func recordChain(t *testing.T, d *Device, dropBarriers bool) {
	scale := kernel(t, d, "scale", 2, []int{1}, 12)
	defer scale.Release()
	add := kernel(t, d, "add", 3, []int{2}, 4)
	const n = 4099
	xs := make([]float32, n)
	for i := range xs {
		xs[i] = float32(i%97) - 48
	}
	x, err := NewBufferFrom(d, xs)
	require.NoError(t, err)
	y, err := d.NewBuffer(4 * n)
	require.NoError(t, err)
	z, err := d.NewBuffer(4 * n)
	require.NoError(t, err)
	defer x.Release()
	defer y.Release()
	defer z.Release()
	defer add.Release()
	groups := [3]uint32{(n + 255) / 256, 1, 1}
	require.NoError(t, d.Run(func(s *Sequence) error {
		s.noAutoBarriers = dropBarriers
		for i := 0; i < 20; i++ {
			if err := s.Dispatch(scale, groups, []uint32{n, F32(2), 0xffffffff}, x.Whole(), y.Whole()); err != nil {
				return err
			}
			if err := s.Dispatch(add, groups, []uint32{n}, y.Whole(), x.Whole(), z.Whole()); err != nil {
				return err
			}
			// Only a write-after-read on y: without its barrier z could become 8x.
			if err := s.Dispatch(scale, groups, []uint32{n, F32(7), 0xffffffff}, x.Whole(), y.Whole()); err != nil {
				return err
			}
			if err := s.Dispatch(scale, groups, []uint32{n, F32(3), 0xffffffff}, z.Whole(), y.Whole()); err != nil {
				return err
			}
		}
		return nil
	}))
	if dropBarriers {
		return // the result is undefined without the barriers (in order on the software drivers)
	}
	got, err := Read[float32](y, 0, n)
	require.NoError(t, err)
	for i := range xs {
		require.Equal(t, 9*xs[i], got[i], "element %d", i)
	}
}

func TestDispatchErrors(t *testing.T) {
	d := openTest(t)
	k := kernel(t, d, "add", 3, []int{2}, 4)
	a, err := d.NewBuffer(16)
	require.NoError(t, err)
	defer a.Release()
	s, err := d.NewSequence()
	require.NoError(t, err)
	defer s.Release()
	require.ErrorContains(t, s.Dispatch(k, [3]uint32{1, 1, 1}, []uint32{4}, a.Whole()), "1 buffers for 3 bindings")
	require.ErrorContains(t, s.Dispatch(k, [3]uint32{1, 1, 1}, nil, a.Whole(), a.Whole(), a.Whole()), "0 bytes of push constants, want 4")
	require.ErrorContains(t, s.Dispatch(k, [3]uint32{0, 1, 1}, []uint32{4}, a.Whole(), a.Whole(), a.Whole()), "0 workgroups")
	_, err = d.NewKernel(KernelSpec{Name: "junk", SPIRV: []byte{1, 2, 3, 4}})
	require.ErrorContains(t, err, "kernel junk: not a SPIR-V module")
}

func TestTimer(t *testing.T) {
	d := openTest(t)
	k := kernel(t, d, "copy", 2, []int{1}, 4)
	const n = 1 << 20
	src, err := d.NewBuffer(4 * n)
	require.NoError(t, err)
	defer src.Release()
	dst, err := d.NewBuffer(4 * n)
	require.NoError(t, err)
	defer dst.Release()
	tm, err := d.NewTimer(4)
	require.NoError(t, err)
	defer tm.Release()
	require.NoError(t, d.Run(func(s *Sequence) error {
		if err := s.Mark(tm, "start"); err != nil {
			return err
		}
		if err := s.Dispatch(k, [3]uint32{256, 1, 1}, []uint32{n}, src.Whole(), dst.Whole()); err != nil {
			return err
		}
		return s.Mark(tm, "copy")
	}))
	spans, err := tm.Spans()
	require.NoError(t, err)
	require.Len(t, spans, 1)
	require.Equal(t, "copy", spans[0].Label)
	require.Positive(t, spans[0].NS)
}

// TestCloseReportsAndReleasesLeaks leaves buffers, a kernel, a sequence and a timer open: Close
// must report them (ErrLeak, with counts and bytes) and still release them all, or the validation
// layer reports the Vulkan objects left behind when the device is destroyed.
func TestCloseReportsAndReleasesLeaks(t *testing.T) {
	d := openValidated(t)
	require.Equal(t, Live{}, d.Live())
	_ = kernel(t, d, "copy", 2, []int{1}, 4)
	_, err := d.NewBuffer(1 << 10)
	require.NoError(t, err)
	_, err = d.NewHostBuffer(1 << 10)
	require.NoError(t, err)
	s, err := d.NewSequence()
	require.NoError(t, err)
	_ = s
	_, err = d.NewTimer(2)
	require.NoError(t, err)
	// A device-local write through the staging buffer: the device's own buffer is no leak.
	d.forceStaging = true
	b, err := NewBufferFrom(d, []float32{1, 2})
	require.NoError(t, err)
	b.Release()
	want := Live{Buffers: 2, BufferBytes: 2 << 10, Kernels: 1, Sequences: 1, Timers: 1}
	require.Equal(t, want, d.Live())
	err = d.Close()
	require.ErrorIs(t, err, ErrLeak)
	require.ErrorContains(t, err, want.String())
	require.Empty(t, d.ValidationMessages(), "Close released everything")
	require.NoError(t, d.Close(), "a second Close is harmless")
}
