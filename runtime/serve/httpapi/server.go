// Package httpapi is bitgpu's OpenAI-compatible HTTP layer over the serving engine (package
// runtime/serve): POST /v1/completions and /v1/chat/completions (streamed as server-sent events
// or not), GET /v1/models, GET /health, GET /metrics (Prometheus), and llama-server's POST
// /tokenize and /detokenize. A Server is an http.Handler, so a Go program can mount it on its own
// mux or http.Server:
//
//	srv := httpapi.New(httpapi.Options{ModelName: "bitgpu-tiny", Log: os.Stderr})
//	go http.ListenAndServe("127.0.0.1:8080", srv) // /health answers 503 until SetEngine
//	srv.SetEngine(eng, m.Config().ChatTemplate)
package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bitgpu/bitgpu/runtime"
	"github.com/bitgpu/bitgpu/runtime/serve"
)

// MaxBodyBytes is the largest request body read (a larger one gets 413).
const MaxBodyBytes = 16 << 20

// DefaultSampling is the sampling a request gets for the fields it leaves out: bitgpu generate's
// defaults (temperature 0.8, top-k 40, top-p 0.95, no min-p, no repetition penalty).
var DefaultSampling = runtime.SamplerOptions{Temperature: 0.8, TopK: 40, TopP: 0.95}

// Options configure a Server.
type Options struct {
	// ModelName is the model id /v1/models lists and replies carry.
	ModelName string
	// APIKey, when not empty, must be sent as "Authorization: Bearer APIKey" on every endpoint but
	// /health; otherwise the answer is 401.
	APIKey string
	// Log receives one line per request (method, path, status, prompt+generated tokens, ms);
	// nil discards them.
	Log io.Writer
	// Sampling replaces DefaultSampling when not nil.
	Sampling *runtime.SamplerOptions
	// RetryAfter is the Retry-After header, in seconds, of a 503 for a full queue (0: 1).
	RetryAfter int
	// LoRA lists the loaded LoRA adapters, in load order (their ids), for GET /lora-adapters.
	LoRA []LoRAAdapter
}

// LoRAAdapter is one loaded adapter as GET /lora-adapters lists it (llama-server's shape: id,
// path, scale): its file or directory and its scale for requests without a "lora" field.
type LoRAAdapter struct {
	Path  string
	Scale float32
}

// Server is the HTTP API. It answers /health with 503 until SetEngine and after SetDraining.
type Server struct {
	opts     Options
	mux      *http.ServeMux
	reg      *prometheus.Registry
	state    atomic.Pointer[backend]
	draining atomic.Bool
	m        metrics
	logMu    sync.Mutex
	created  int64
}

// backend is what SetEngine installs.
type backend struct {
	eng      *serve.Engine
	template string
}

// New returns a Server that answers 503 (loading) until SetEngine.
func New(o Options) *Server {
	if o.ModelName == "" {
		o.ModelName = "bitgpu"
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = 1
	}
	s := &Server{opts: o, mux: http.NewServeMux(), reg: prometheus.NewRegistry(), created: time.Now().Unix()}
	s.m = newMetrics(s.reg, s)
	s.mux.HandleFunc("POST /v1/completions", s.completions)
	s.mux.HandleFunc("POST /v1/chat/completions", s.chatCompletions)
	s.mux.HandleFunc("GET /v1/models", s.models)
	s.mux.HandleFunc("GET /lora-adapters", s.loraAdapters)
	s.mux.HandleFunc("GET /health", s.health)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("POST /tokenize", s.tokenize)
	s.mux.HandleFunc("POST /detokenize", s.detokenize)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error",
			Message: fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path)})
	})
	return s
}

// SetEngine makes the server ready: requests go to eng, chat requests rendered with the chat
// template chatTemplate (the model's tokenizer.chat_template; "" is the model's default format).
func (s *Server) SetEngine(eng *serve.Engine, chatTemplate string) {
	s.state.Store(&backend{eng: eng, template: chatTemplate})
}

// SetDraining makes /health answer 503 (shutting down), so load balancers stop sending requests
// while the ones in flight finish.
func (s *Server) SetDraining() { s.draining.Store(true) }

// Registry is the Prometheus registry /metrics serves (a Go program may add its own collectors).
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// reqInfo is what a handler reports for the request's log line.
type reqInfo struct{ prompt, generated int }

// infoKey is the context key of a request's *reqInfo.
type infoKey struct{}

// info returns r's *reqInfo (a throwaway one outside ServeHTTP).
func info(r *http.Request) *reqInfo {
	if in, ok := r.Context().Value(infoKey{}).(*reqInfo); ok {
		return in
	}
	return &reqInfo{}
}

// recorder captures the status of a response.
type recorder struct {
	http.ResponseWriter
	status int
}

// WriteHeader records the status.
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (Flush for event streams).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// ServeHTTP checks the API key, routes the request and logs one line for it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	in := &reqInfo{}
	rec := &recorder{ResponseWriter: w}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, in))
	if s.authorized(r) {
		s.mux.ServeHTTP(rec, r)
	} else {
		writeError(rec, &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
			Message: "Incorrect or missing API key: send it as the header 'Authorization: Bearer KEY'."})
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	ms := time.Since(start).Milliseconds()
	s.m.requests.WithLabelValues(r.URL.Path, fmt.Sprint(rec.status)).Inc()
	if s.opts.Log != nil {
		s.logMu.Lock()
		fmt.Fprintf(s.opts.Log, "bitgpu: %s %s %d tokens=%d+%d %dms\n", r.Method, r.URL.Path, rec.status, in.prompt, in.generated, ms)
		s.logMu.Unlock()
	}
}

// authorized reports whether r may proceed: no key is set, the path is /health, or r carries the
// key as a bearer token.
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.APIKey == "" || r.URL.Path == "/health" {
		return true
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(s.opts.APIKey)) == 1
}

// ready returns the engine, or answers 503 and returns nil while the model loads.
func (s *Server) ready(w http.ResponseWriter) *backend {
	b := s.state.Load()
	if b == nil {
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Type: "unavailable_error", Message: "Loading model", RetryAfter: s.opts.RetryAfter})
	}
	return b
}

// health answers 200 {"status":"ok"} when ready, 503 while loading or shutting down.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.draining.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "shutting down"})
	case s.state.Load() == nil:
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Type: "unavailable_error", Message: "Loading model"})
	default:
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	}
}

// models lists the one model served.
// loraAdapters answers GET /lora-adapters: [{"id", "path", "scale"}, ...] for the adapters
// loaded at start (an empty array when none).
func (s *Server) loraAdapters(w http.ResponseWriter, r *http.Request) {
	if s.ready(w) == nil {
		return
	}
	list := make([]any, 0, len(s.opts.LoRA))
	for i, a := range s.opts.LoRA {
		list = append(list, map[string]any{"id": i, "path": a.Path, "scale": a.Scale})
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	if s.ready(w) == nil {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{
		map[string]any{"id": s.opts.ModelName, "object": "model", "created": s.created, "owned_by": "bitgpu"}}})
}

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers e as OpenAI's error JSON.
func writeError(w http.ResponseWriter, e *apiError) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(e.RetryAfter))
	}
	writeJSON(w, e.Status, e.body())
}

// engineError maps an error of serve.Engine.Submit to an apiError; param names the prompt field.
func (s *Server) engineError(err error, param string) *apiError {
	var long *serve.PromptTooLongError
	switch {
	case errors.As(err, &long):
		e := badRequest(param, "%s", long.Error())
		e.Code = "context_length_exceeded"
		return e
	case errors.Is(err, serve.ErrQueueFull):
		return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "queue_full",
			Message: "The server is busy (every slot is in use and the queue is full); retry later.", RetryAfter: s.opts.RetryAfter}
	case errors.Is(err, serve.ErrClosed):
		return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "shutting_down",
			Message: "The server is shutting down.", RetryAfter: s.opts.RetryAfter}
	case errors.Is(err, serve.ErrEmptyPrompt):
		return badRequest(param, "the prompt is empty")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: 499, Type: "server_error", Message: "the request was cancelled"}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Message: err.Error()}
}

// metrics are the Prometheus series of a Server.
type metrics struct {
	requests         *prometheus.CounterVec
	promptTokens     prometheus.Counter
	generatedTokens  prometheus.Counter
	ttft, itl, e2e   prometheus.Histogram
	queueTime        prometheus.Histogram
	completedByFinal *prometheus.CounterVec
}

// newMetrics registers the series on reg; the gauges read s's engine.
func newMetrics(reg *prometheus.Registry, s *Server) metrics {
	f := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	h := func(name, help string, buckets []float64) prometheus.Histogram {
		x := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
		reg.MustRegister(x)
		return x
	}
	lat := prometheus.ExponentialBuckets(0.001, 2, 16) // 1 ms .. 33 s
	m := metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bitgpu_requests_total",
			Help: "HTTP requests by path and status."}, []string{"path", "status"}),
		completedByFinal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bitgpu_generations_total",
			Help: "Generations finished, by finish reason (stop, length, canceled, error)."}, []string{"finish_reason"}),
		promptTokens:    f("bitgpu_prompt_tokens_total", "Prompt tokens prefilled."),
		generatedTokens: f("bitgpu_generated_tokens_total", "Tokens generated."),
		ttft:            h("bitgpu_time_to_first_token_seconds", "Time from request to its first generated token.", lat),
		itl:             h("bitgpu_inter_token_latency_seconds", "Time between consecutive generated tokens of a request.", lat),
		e2e:             h("bitgpu_request_duration_seconds", "Time from request to its last generated token.", lat),
		queueTime:       h("bitgpu_queue_time_seconds", "Time a request waited for a sequence slot.", lat),
	}
	reg.MustRegister(m.requests, m.completedByFinal, collectors.NewGoCollector())
	gauge := func(name, help string, fn func(serve.Stats) int) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			if b := s.state.Load(); b != nil {
				return float64(fn(b.eng.Stats()))
			}
			return 0
		}))
	}
	gauge("bitgpu_requests_running", "Requests holding a sequence slot.", func(st serve.Stats) int { return st.Running })
	gauge("bitgpu_requests_queued", "Requests waiting for a sequence slot.", func(st serve.Stats) int { return st.Queued })
	gauge("bitgpu_slots", "Sequence slots (--parallel).", func(st serve.Stats) int { return st.Slots })
	gauge("bitgpu_kv_blocks_used", "KV-cache blocks of 32 positions the running sequences fill.", func(st serve.Stats) int { return st.KVBlocksUsed })
	gauge("bitgpu_kv_blocks_free", "KV-cache blocks of 32 positions not in use.", func(st serve.Stats) int { return st.KVBlocksTotal - st.KVBlocksUsed })
	counter := func(name, help string, fn func(serve.Stats) int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 {
			if b := s.state.Load(); b != nil {
				return float64(fn(b.eng.Stats()))
			}
			return 0
		}))
	}
	counter("bitgpu_decode_steps_total", "Decode steps run: one generated token's forward pass each, batched or alone.", func(st serve.Stats) int64 { return st.DecodeTokens })
	counter("bitgpu_batched_steps_total", "Batched forward passes: one token of each of two sequences or more.", func(st serve.Stats) int64 { return st.BatchedSteps })
	counter("bitgpu_batched_tokens_total", "Decode steps run inside batched forward passes (÷ bitgpu_batched_steps_total: the mean batch width).", func(st serve.Stats) int64 { return st.BatchedTokens })
	return m
}

// observe records a finished generation.
func (m metrics) observe(res serve.Result, err error) {
	if res.Queued > 0 || len(res.Tokens) > 0 { // the request got a slot, so its prompt was (being) prefilled
		m.promptTokens.Add(float64(res.PromptTokens))
	}
	m.generatedTokens.Add(float64(len(res.Tokens)))
	if res.FirstToken > 0 {
		m.ttft.Observe(res.FirstToken.Seconds())
		m.e2e.Observe(res.Total.Seconds())
	}
	m.queueTime.Observe(res.Queued.Seconds())
	for _, d := range res.InterToken {
		m.itl.Observe(d.Seconds())
	}
	reason := finishReason(res.Stop)
	if err != nil {
		reason = "error"
		if res.Stop == runtime.StopCanceled {
			reason = "canceled"
		}
	}
	m.completedByFinal.WithLabelValues(reason).Inc()
}
