package serve_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu"
	"github.com/bitgpu/bitgpu/runtime"
	"github.com/bitgpu/bitgpu/runtime/serve"
)

// openSlots opens the built-in model on device with n sequence backends of ctx tokens.
func openSlots(t *testing.T, device string, n, ctx int) (*bitgpu.Model, []runtime.Backend) {
	t.Helper()
	m, err := bitgpu.Open("", bitgpu.Options{Device: device, Ctx: ctx})
	require.NoError(t, err)
	_, b := m.Internals()
	bs := []runtime.Backend{b}
	for len(bs) < n {
		s, err := m.NewSequence()
		require.NoError(t, err)
		bs = append(bs, s)
	}
	t.Cleanup(func() {
		for _, b := range bs[1:] {
			b.Close()
		}
		m.Close()
	})
	return m, bs
}

// TestBatchInvariance runs long prompts (prefilled in 5-token chunks interleaved with the other
// sequences' steps) greedy and seeded, three at a time, and requires each request's tokens to be
// those of runtime.Generate alone on a fresh backend, on both CPU backends.
func TestBatchInvariance(t *testing.T) {
	for _, device := range []string{"cpu", "cpuref"} {
		t.Run(device, func(t *testing.T) {
			m, slots := openSlots(t, device, 3, 256)
			mm, solo := m.Internals()
			tok := mm.Tokenizer
			eng, err := serve.New(serve.Options{Backends: slots[1:], Tokenizer: tok, Context: 256, PrefillChunk: 5})
			require.NoError(t, err)
			defer eng.Shutdown(context.Background())
			type job struct {
				req  serve.Request
				want []int
			}
			var jobs []job
			for i := range 6 {
				prompt := runtime.EncodePrompt(tok, fmt.Sprintf("Request %d: %s", i, strings.Repeat("the cat sat on the mat ", i+1)))
				so := runtime.SamplerOptions{}
				if i%2 == 1 {
					so = runtime.SamplerOptions{Temperature: 0.9, TopK: 40, TopP: 0.95, Seed: uint64(i)}
				}
				s, err := runtime.NewSampler(so)
				require.NoError(t, err)
				solo.Reset()
				st, err := runtime.Generate(solo, tok, prompt, runtime.GenerateOptions{MaxTokens: 12, Context: 256, Sampler: s})
				require.NoError(t, err)
				jobs = append(jobs, job{serve.Request{Prompt: prompt, MaxTokens: 12, Sampler: so}, st.Tokens})
			}
			var wg sync.WaitGroup
			got := make([][]int, len(jobs))
			errs := make([]error, len(jobs))
			for i, j := range jobs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := eng.Submit(context.Background(), j.req)
					got[i], errs[i] = res.Tokens, err
				}()
			}
			wg.Wait()
			for i, j := range jobs {
				require.NoError(t, errs[i])
				require.Equal(t, j.want, got[i], "request %d", i)
			}
			st := eng.Stats()
			require.Greater(t, st.Steps, int64(12), "steps ran in rounds")
			decoded := 0
			for _, g := range got {
				decoded += len(g) - 1 // the last token is not fed back
			}
			require.Equal(t, int64(decoded), st.DecodeTokens)
			if device == "cpuref" {
				require.Zero(t, st.BatchedSteps, "cpuref has no batched step")
			}
		})
	}
}

func TestSubmitErrors(t *testing.T) {
	m, slots := openSlots(t, "cpu", 1, 32)
	mm, _ := m.Internals()
	eng, err := serve.New(serve.Options{Backends: slots, Tokenizer: mm.Tokenizer, Context: 32, Queue: -1})
	require.NoError(t, err)
	_, err = eng.Submit(context.Background(), serve.Request{})
	require.ErrorIs(t, err, serve.ErrEmptyPrompt)
	_, err = eng.Submit(context.Background(), serve.Request{Prompt: make([]int, 33)})
	var long *serve.PromptTooLongError
	require.ErrorAs(t, err, &long)
	require.Equal(t, 33, long.Tokens)
	require.Equal(t, 32, long.Limit)
	_, err = eng.Submit(context.Background(), serve.Request{Prompt: []int{1}, Sampler: runtime.SamplerOptions{TopP: 3}})
	require.ErrorContains(t, err, "top-p")

	// One slot, no queue: a second request while the first runs is refused.
	started := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := eng.Submit(context.Background(), serve.Request{Prompt: []int{1}, MaxTokens: 3, IgnoreEOS: true,
			OnPiece: func(serve.Piece) error {
				select {
				case <-started:
				default:
					close(started)
					<-release
				}
				return nil
			}})
		done <- err
	}()
	<-started
	_, err = eng.Submit(context.Background(), serve.Request{Prompt: []int{1}, MaxTokens: 1})
	require.ErrorIs(t, err, serve.ErrQueueFull)
	close(release)
	require.NoError(t, <-done)

	// Cancelled mid-generation (a client that went away): it stops at the next step.
	ctx, cancel := context.WithCancel(context.Background())
	res, err := eng.Submit(ctx, serve.Request{Prompt: []int{1}, IgnoreEOS: true,
		OnPiece: func(serve.Piece) error { cancel(); return nil }})
	require.ErrorIs(t, err, context.Canceled)
	require.LessOrEqual(t, len(res.Tokens), 2, "stopped within a step of the cancel")
	require.Equal(t, runtime.StopCanceled, res.Stop)

	// Cancelled before it starts: the context's error.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	_, err = eng.Submit(ctx, serve.Request{Prompt: []int{1}, MaxTokens: 1})
	require.True(t, errors.Is(err, context.Canceled), "%v", err)

	require.NoError(t, eng.Shutdown(context.Background()))
	_, err = eng.Submit(context.Background(), serve.Request{Prompt: []int{1}, MaxTokens: 1})
	require.ErrorIs(t, err, serve.ErrClosed)
}

// TestBatchedSteps: four requests on four fast-CPU slots (greedy and seeded, prompts of
// different lengths, so the sequences decode at different positions) decode in batched steps —
// Stats counts batched forward passes of two tokens or more, and every decode step is counted —
// and each request's tokens are those of runtime.Generate alone on a fresh backend.
func TestBatchedSteps(t *testing.T) {
	const n, tokens = 4, 16
	m, slots := openSlots(t, "cpu", n+1, 256)
	mm, solo := m.Internals()
	tok := mm.Tokenizer
	// A long BatchWait: once two sequences are in a round, every later round waits for both.
	eng, err := serve.New(serve.Options{Backends: slots[1:], Tokenizer: tok, Context: 256, PrefillChunk: 8, BatchWait: time.Second})
	require.NoError(t, err)
	defer eng.Shutdown(context.Background())
	reqs := make([]serve.Request, n)
	want := make([][]int, n)
	for i := range reqs {
		prompt := runtime.EncodePrompt(tok, fmt.Sprintf("Stream %d: %s", i, strings.Repeat("a long prompt ", 3*i)))
		so := runtime.SamplerOptions{}
		if i%2 == 1 {
			so = runtime.SamplerOptions{Temperature: 0.8, TopK: 40, Seed: uint64(i)}
		}
		s, err := runtime.NewSampler(so)
		require.NoError(t, err)
		solo.Reset()
		st, err := runtime.Generate(solo, tok, prompt, runtime.GenerateOptions{MaxTokens: tokens, Context: 256, Sampler: s, IgnoreEOS: true})
		require.NoError(t, err)
		want[i] = st.Tokens
		first := true
		reqs[i] = serve.Request{Prompt: prompt, MaxTokens: tokens, Sampler: so, IgnoreEOS: true,
			OnPiece: func(serve.Piece) error { // at the first piece, wait until every request holds a slot
				for first && eng.Stats().Running < n {
					time.Sleep(time.Millisecond)
				}
				first = false
				return nil
			}}
	}
	got := make([][]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := eng.Submit(context.Background(), reqs[i])
			got[i], errs[i] = res.Tokens, err
		}()
	}
	wg.Wait()
	for i := range reqs {
		require.NoError(t, errs[i])
		require.Equal(t, want[i], got[i], "request %d", i)
	}
	st := eng.Stats()
	require.Equal(t, int64(n*(tokens-1)), st.DecodeTokens, "every generated token but the last is decoded")
	require.Positive(t, st.BatchedSteps)
	require.GreaterOrEqual(t, st.BatchedTokens, 2*st.BatchedSteps, "a batched step decodes two tokens or more")
	require.LessOrEqual(t, st.BatchedTokens, int64(n)*st.BatchedSteps)
	t.Logf("%d decode steps, %d in %d batched steps (%.2f tokens each), %d rounds", st.DecodeTokens,
		st.BatchedTokens, st.BatchedSteps, float64(st.BatchedTokens)/float64(st.BatchedSteps), st.Steps)
}
