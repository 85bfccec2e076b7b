package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu"
	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/runtime"
	"github.com/bitgpu/bitgpu/runtime/serve"
	"github.com/bitgpu/bitgpu/runtime/serve/httpapi"
)

// serveCmd is `bitgpu serve [-m FILE] [--host 127.0.0.1] [--port 8080] [--parallel N] [--ctx N]
// [--device ...] [--lm-head ...] [--ternary-packing ...] [--queue N] [--api-key KEY]`: an
// OpenAI-compatible HTTP server.
var serveCmd = &cobra.Command{
	Use:   "serve [-m FILE]",
	Short: "Serve the model over an OpenAI-compatible HTTP API",
	Long: `Serve the model over HTTP: POST /v1/completions and /v1/chat/completions (OpenAI's API,
streamed as server-sent events with "stream": true), GET /v1/models, GET /health (503 while the
model loads, 200 when ready), GET /metrics (Prometheus), POST /tokenize and /detokenize
(llama-server's shapes). Up to --parallel requests generate at once, each up to --ctx tokens; up
to --queue more wait, and beyond that a request gets 503 with Retry-After. On the GPU the
sequences share one copy of the weights and one paged KV cache of --kv-size positions (blocks of
32, taken as a sequence grows) and decode together in one batched step; a request reserves the
blocks of its prompt + max_tokens (the whole --ctx without max_tokens) and waits in the queue
until they are free. On the CPU every sequence has its own cache of --ctx tokens. One line per
request goes to stderr. SIGTERM or SIGINT stops accepting connections, lets the requests
in flight finish for up to --shutdown-timeout (then cancels them), frees the device and exits 0.`,
	Args: cobra.NoArgs,
	RunE: runServe,
}

func init() {
	f := serveCmd.Flags()
	addModelFlags(serveCmd, fmt.Sprintf("context length in tokens of each sequence (default %d, at most the model's)", bitgpu.DefaultContext))
	f.String("host", "127.0.0.1", "address to listen on")
	f.Int("port", 8080, "TCP port to listen on (0: any free port, printed)")
	f.Int("parallel", 4, "sequences generated at once, each up to --ctx tokens")
	f.Int("kv-size", 0, "positions in the GPU's shared paged KV cache (default: --parallel × --ctx, in whole blocks of 32)")
	f.Int("queue", serve.DefaultQueue, "requests that may wait for a free sequence; more get 503 with Retry-After")
	f.String("api-key", "", "require 'Authorization: Bearer KEY' on every endpoint but /health (default: $BITGPU_API_KEY)")
	f.Duration("shutdown-timeout", 10*time.Second, "on SIGTERM/SIGINT, how long requests in flight may run before they are cancelled")
	rootCmd.AddCommand(serveCmd)
}

// runServe listens first (so /health answers 503 while the model loads), loads the model and its
// sequences, serves until SIGTERM or SIGINT, then shuts down gracefully.
func runServe(cmd *cobra.Command, _ []string) (err error) {
	f := cmd.Flags()
	host, _ := f.GetString("host")
	port, _ := f.GetInt("port")
	parallel, _ := f.GetInt("parallel")
	queue, _ := f.GetInt("queue")
	key, _ := f.GetString("api-key")
	grace, _ := f.GetDuration("shutdown-timeout")
	kvSize, _ := f.GetInt("kv-size")
	if key == "" {
		key = os.Getenv("BITGPU_API_KEY")
	}
	switch {
	case port < 0 || port > 65535:
		return fmt.Errorf("--port %d: want 0..65535", port)
	case parallel < 1:
		return fmt.Errorf("--parallel %d: must be at least 1", parallel)
	case queue < 0:
		return fmt.Errorf("--queue %d: must be >= 0", queue)
	case kvSize < 0:
		return fmt.Errorf("--kv-size %d: must be >= 0", kvSize)
	case grace < 0:
		return fmt.Errorf("--shutdown-timeout %v: must be >= 0", grace)
	}
	if queue == 0 {
		queue = -1 // serve.Options: negative is no queue
	}
	path, _ := f.GetString("model")
	name := assets.Name
	if path != "" {
		name = strings.TrimSuffix(filepath.Base(path), ".gguf")
	}
	stderr := cmd.ErrOrStderr()
	var adapters []httpapi.LoRAAdapter
	loras, _ := f.GetStringArray("lora")
	for _, v := range loras {
		l, err := bitgpu.ParseLoRA(v)
		if err != nil {
			return err
		}
		adapters = append(adapters, httpapi.LoRAAdapter{Path: l.Path, Scale: l.Scale})
	}
	api := httpapi.New(httpapi.Options{ModelName: name, APIKey: key, Log: stderr, LoRA: adapters})

	// SIGTERM and SIGINT stop the server instead of ending the process.
	stop := make(chan struct{})
	var once sync.Once
	stopFn := func() { once.Do(func() { close(stop) }) }
	defer onInterrupt(stopFn)()
	defer onTerminate(stopFn)()

	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("--host %s --port %d: %w", host, port, err)
	}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 30 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	closeHTTP := func() {
		ctx, cancel := context.WithTimeout(context.Background(), grace+5*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}

	s, err := openSession(cmd, 0)
	if err != nil {
		closeHTTP()
		return err
	}
	defer closeInto(&err, s)
	if kvSize == 0 {
		kvSize = parallel * blocksOf(s.ctx) * serve.BlockSize
	}
	backends, pool, err := serveSlots(s.lib, s.b, parallel, kvSize)
	if err != nil {
		closeHTTP()
		return err
	}
	if pool == nil && f.Changed("kv-size") {
		fmt.Fprintf(stderr, "bitgpu: --kv-size has no effect on the %s backend%s: each sequence owns a cache of --ctx tokens\n",
			s.lib.Backend(), map[bool]string{true: " with --lora", false: ""}[len(s.lib.Adapters()) > 0])
	}
	defer func() {
		if cerr := closeSlots(backends, s.b, pool); err == nil {
			err = cerr
		}
	}()
	var scales []float32
	for _, a := range s.lib.Adapters() {
		scales = append(scales, a.Scale)
	}
	eng, err := serve.New(serve.Options{Backends: backends, Tokenizer: s.m.Tokenizer, Context: s.ctx, Queue: queue, LoRAScales: scales, KVPool: pool})
	if err != nil {
		closeHTTP()
		return err
	}
	api.SetEngine(eng, s.m.Config.ChatTemplate)
	kv := fmt.Sprintf("a KV cache of %d tokens each", s.ctx)
	if pool != nil {
		_, blocks := pool.Blocks()
		kv = fmt.Sprintf("a shared paged KV cache of %d blocks of %d positions", blocks, pool.BlockSize())
	}
	fmt.Fprintf(stderr, "bitgpu: serving %s on http://%s (backend %s, %d sequences of up to %d tokens, %s, queue %d, lm head %s)\n",
		name, ln.Addr(), s.lib.Backend(), parallel, s.ctx, kv, max(queue, 0), lmHeadName(cmd))

	select {
	case <-stop:
	case err := <-served:
		eng.Shutdown(context.Background())
		return fmt.Errorf("http server: %w", err)
	}
	fmt.Fprintf(stderr, "bitgpu: shutting down (requests in flight get up to %v)\n", grace)
	api.SetDraining()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	engDone := make(chan error, 1)
	go func() { engDone <- eng.Shutdown(ctx) }()
	closeHTTP()
	if e := <-engDone; errors.Is(e, context.DeadlineExceeded) {
		fmt.Fprintf(stderr, "bitgpu: cancelled the requests still running after %v\n", grace)
	}
	fmt.Fprintln(stderr, "bitgpu: stopped")
	return nil
}

// lmHeadName is the --lm-head value, defaulted.
func lmHeadName(cmd *cobra.Command) string {
	h, _ := cmd.Flags().GetString("lm-head")
	if h == "" {
		h = string(cpuref.DefaultLMHead)
	}
	return h
}

// terminateHook is the function onTerminate installed, or nil.
var terminateHook struct {
	sync.Mutex
	fn func()
}

// onTerminate makes SIGTERM call fn instead of ending the process, until the returned release is
// called: serve uses it to shut down gracefully and exit 0.
func onTerminate(fn func()) (release func()) {
	terminateHook.Lock()
	terminateHook.fn = fn
	terminateHook.Unlock()
	return func() {
		terminateHook.Lock()
		terminateHook.fn = nil
		terminateHook.Unlock()
	}
}

// terminated runs the onTerminate hook and reports whether there was one.
func terminated() bool {
	terminateHook.Lock()
	fn := terminateHook.fn
	terminateHook.Unlock()
	if fn == nil {
		return false
	}
	fn()
	return true
}

// serveSlots opens the engine's n sequence slots: on the gpu backend without LoRA adapters, n
// sequences of one paged KV cache of kvSize positions (bitgpu.Model.NewPagedSequences, one batched
// step for all); otherwise the model's backend b and n-1 more (bitgpu.Model.NewSequence).
func serveSlots(lib *bitgpu.Model, b runtime.Backend, n, kvSize int) ([]runtime.Backend, bitgpu.KVPool, error) {
	if lib.Backend() == "gpu" && len(lib.Adapters()) == 0 {
		seqs, pool, err := lib.NewPagedSequences(n, kvSize)
		if err != nil {
			return nil, nil, fmt.Errorf("--parallel %d --kv-size %d: %w", n, kvSize, err)
		}
		return seqs, pool, nil
	}
	slots := []runtime.Backend{b}
	for len(slots) < n {
		s, err := lib.NewSequence()
		if err != nil {
			closeSlots(slots, b, nil)
			return nil, nil, fmt.Errorf("--parallel %d: sequence %d: %w", n, len(slots)+1, err)
		}
		slots = append(slots, s)
	}
	return slots, nil, nil
}

// closeSlots closes the slots serveSlots opened (not the model's backend b) and the pool, and
// returns the first error.
func closeSlots(slots []runtime.Backend, b runtime.Backend, pool bitgpu.KVPool) error {
	var err error
	for _, s := range slots {
		if s != b {
			err = errors.Join(err, s.Close())
		}
	}
	if pool != nil {
		err = errors.Join(err, pool.Close())
	}
	return err
}

// blocksOf is the number of KV blocks of serve.BlockSize positions that n positions take.
func blocksOf(n int) int { return (n + serve.BlockSize - 1) / serve.BlockSize }
