package serve

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
)

// cpuSlots opens the built-in model on device with n sequence backends of ctx tokens (the
// model's backend first) and n more, the oracles: each fed what its slot is fed, but alone.
func cpuSlots(t *testing.T, device string, n, ctx int) (slots, solo []runtime.Backend, tok model.Tokenizer) {
	t.Helper()
	m, err := bitgpu.Open("", bitgpu.Options{Device: device, Ctx: ctx})
	require.NoError(t, err)
	mm, b := m.Internals()
	slots = []runtime.Backend{b}
	for len(slots)+len(solo) < 2*n {
		s, err := m.NewSequence()
		require.NoError(t, err)
		if len(slots) < n {
			slots = append(slots, s)
		} else {
			solo = append(solo, s)
		}
	}
	t.Cleanup(func() {
		for _, b := range append(slots[1:], solo...) {
			b.Close()
		}
		m.Close()
	})
	return slots, solo, mm.Tokenizer
}

// requireSame compares logits bit for bit.
func requireSame(t *testing.T, want, got []float32, msg string) {
	t.Helper()
	require.Equal(t, len(want), len(got), msg)
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			require.Failf(t, "logits differ", "%s: element %d: alone %v, in the round %v", msg, i, want[i], got[i])
		}
	}
}

// TestRunRoundBatches: in one scheduler round on the fast CPU backend, the decode steps of two
// slots (at different positions) run as ONE batched forward pass — counted in Stats — and each
// gets the logits of its sequence decoded alone, bit for bit; a cancelled step fails with its
// context's cause and leaves its sequence alone; a prefill chunk runs alone. When the batch
// fails (a full cache), each step runs alone and only the full one fails. With Unbatched, or on
// cpuref (no batched step), the same rounds run step by step with the same logits.
func TestRunRoundBatches(t *testing.T) {
	for _, c := range []struct {
		device    string
		unbatched bool
		batched   int64 // batched steps of the first round
	}{{"cpu", false, 1}, {"cpu", true, 0}, {"cpuref", false, 0}} {
		t.Run(fmt.Sprintf("%s/unbatched=%v", c.device, c.unbatched), func(t *testing.T) {
			const ctx = 16
			slots, solo, tok := cpuSlots(t, c.device, 5, ctx)
			e, err := New(Options{Backends: slots, Tokenizer: tok, Context: ctx, Unbatched: c.unbatched})
			require.NoError(t, err)
			defer e.Shutdown(context.Background())
			require.Equal(t, c.batched > 0, e.batching)
			for i := range slots { // slot i holds 1+3i tokens, slot 4 a full cache
				p := make([]int, 1+3*i)
				if i == 4 {
					p = make([]int, ctx)
				}
				for j := range p {
					p[j] = 1 + (i*7+j*13)%200
				}
				_, err := slots[i].Prefill(p, false)
				require.NoError(t, err)
				_, err = solo[i].Prefill(p, false)
				require.NoError(t, err)
			}
			cancelled, cancel := context.WithCancelCause(context.Background())
			cancel(ErrClosed)
			bg := context.Background()
			seqs := make([]*sequence, len(slots))
			for i, b := range slots {
				seqs[i] = &sequence{slot: i, b: b}
			}
			decode := func(i, tok int, ctx context.Context) *step {
				return &step{seq: seqs[i], ctx: ctx, decode: true, token: tok, done: make(chan struct{})}
			}
			var chunk []float32
			prefill := &step{seq: seqs[3], ctx: bg, done: make(chan struct{}), fn: func() (err error) {
				chunk, err = slots[3].Prefill([]int{5, 6}, false)
				return err
			}}
			// Steps in any order: the round sorts them.
			d2, d0, d1 := decode(2, 40, bg), decode(0, 17, bg), decode(1, 99, cancelled)
			e.runRound([]*step{d2, prefill, d0, d1})
			for _, s := range []*step{d2, prefill, d0, d1} {
				<-s.done // closed
			}
			for i, s := range map[int]*step{0: d0, 2: d2} {
				want, err := solo[i].Decode(s.token)
				require.NoError(t, err)
				require.NoError(t, s.err)
				requireSame(t, want, s.logits, fmt.Sprintf("slot %d", i))
				require.Equal(t, solo[i].Pos(), slots[i].Pos())
				require.Equal(t, int64(solo[i].Pos()), s.seq.pos.Load())
			}
			require.ErrorIs(t, d1.err, ErrClosed)
			require.Nil(t, d1.logits)
			require.Equal(t, 4, slots[1].Pos(), "the cancelled step did not run")
			require.NoError(t, prefill.err)
			want, err := solo[3].Prefill([]int{5, 6}, false)
			require.NoError(t, err)
			requireSame(t, want, chunk, "the prefill chunk")
			require.Equal(t, int64(12), seqs[3].pos.Load())
			require.Equal(t, Stats{Slots: 5, KVBlocksTotal: 5, Steps: 1, DecodeTokens: 2, BatchedSteps: c.batched,
				BatchedTokens: 2 * c.batched}, e.Stats())

			// A batch with a full cache (slot 4) fails as a whole; each step then runs alone.
			d4, d0, d1 := decode(4, 3, bg), decode(0, 8, bg), decode(1, 9, bg)
			e.runRound([]*step{d1, d4, d0})
			require.ErrorContains(t, d4.err, "exceed the context length")
			require.Equal(t, ctx, slots[4].Pos())
			for i, s := range map[int]*step{0: d0, 1: d1} {
				want, err := solo[i].Decode(s.token)
				require.NoError(t, err)
				require.NoError(t, s.err)
				requireSame(t, want, s.logits, fmt.Sprintf("slot %d after a failed batch", i))
			}
			require.Equal(t, Stats{Slots: 5, KVBlocksTotal: 5, Steps: 2, DecodeTokens: 4, BatchedSteps: c.batched,
				BatchedTokens: 2 * c.batched}, e.Stats(), "the failed batch is not counted")
		})
	}
}
