package runtime

import (
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/bitgpu/bitgpu/gpu"
	"github.com/stretchr/testify/require"
)

func TestAttnTiming(t *testing.T) {
	d, err := gpu.Open(gpu.OptionsFromEnv())
	require.NoError(t, err)
	defer d.Close()
	a := NewAttentionKernels(d)
	for _, c := range []struct{ H, KVH, ctx, pos uint32 }{{20, 5, 64, 63}, {20, 5, 4096, 127}, {20, 5, 4096, 4095}, {4, 4, 4096, 4095}, {20, 20, 4096, 4095}} {
		args := AttentionArgs{T: 1, H: c.H, KVH: c.KVH, HeadDim: 128, Ctx: c.ctx}
		rng := rand.New(rand.NewPCG(1, 1))
		bk, _ := d.NewBuffer(args.cacheBytes())
		bv, _ := d.NewBuffer(args.cacheBytes())
		bq, _ := gpu.NewBufferFrom(d, attnQueries(rng, int(c.H*128)))
		out, _ := d.NewBuffer(uint64(c.H) * 128 * 4)
		scratch, _ := d.NewBuffer(max(AttentionScratchBytes(c.H, 128, c.ctx), 4))
		s, _ := d.NewSequence()
		require.NoError(t, a.Attention(s, bq.Whole(), bk.Whole(), bv.Whole(), out.Whole(), scratch.Whole(), args))
		s.SetStep(0, c.pos)
		require.NoError(t, s.Submit())
		var r0, r1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
		st := time.Now()
		for range 3 {
			require.NoError(t, s.Submit())
		}
		syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
		cpu := time.Duration(r1.Utime.Nano()+r1.Stime.Nano()-r0.Utime.Nano()-r0.Stime.Nano()) / 3
		t.Logf("%+v: %v wall, %v cpu per call", c, time.Since(st)/3, cpu)
	}
}

func TestAttnCopyTiming(t *testing.T) {
	d, err := gpu.Open(gpu.OptionsFromEnv())
	require.NoError(t, err)
	defer d.Close()
	ks, err := NewKernels(d)
	require.NoError(t, err)
	n := uint32(8 << 20)
	a, _ := d.NewBuffer(4 * uint64(n))
	b, _ := d.NewBuffer(4 * uint64(n))
	s, _ := d.NewSequence()
	require.NoError(t, ks.Copy(s, a.Whole(), b.Whole(), n))
	require.NoError(t, s.Submit())
	st := time.Now()
	for range 5 {
		require.NoError(t, s.Submit())
	}
	t.Logf("copy 32 MiB: %v per call, %.2f GB/s", time.Since(st)/5, float64(2*4*n)/float64(time.Since(st)/5))
}
