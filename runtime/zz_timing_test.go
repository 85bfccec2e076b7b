package runtime

import (
	"math/rand/v2"
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
		st := time.Now()
		for range 3 {
			require.NoError(t, s.Submit())
		}
		t.Logf("%+v: %v per call", c, time.Since(st)/3)
	}
}
