package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu"
	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
	"github.com/bitgpu/bitgpu/runtime/serve"
	"github.com/bitgpu/bitgpu/runtime/serve/httpapi"
)

// testServer is the built-in model on the CPU backend behind a loopback HTTP server.
type testServer struct {
	m   *bitgpu.Model
	eng *serve.Engine
	api *httpapi.Server
	srv *httptest.Server
	log *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for concurrent writes (the request log).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// slowBackend delays every decode step, so a test can hold a slot for a known time.
type slowBackend struct {
	runtime.Backend
	delay time.Duration
}

// Decode sleeps, then decodes.
func (s slowBackend) Decode(token int) ([]float32, error) {
	time.Sleep(s.delay)
	return s.Backend.Decode(token)
}

// start serves the built-in model with parallel sequences of ctx tokens and queue waiting slots.
func start(t *testing.T, parallel, ctx, queue int, key string) *testServer {
	return startSlow(t, parallel, ctx, queue, key, 0)
}

// startSlow is start with every decode step delayed by delay.
func startSlow(t *testing.T, parallel, ctx, queue int, key string, delay time.Duration) *testServer {
	t.Helper()
	return startWith(t, parallel, ctx, queue, key, delay, nil)
}

// startWith is startSlow with LoRA adapters loaded (their scales the defaults of requests).
func startWith(t *testing.T, parallel, ctx, queue int, key string, delay time.Duration, loras []bitgpu.LoRA) *testServer {
	t.Helper()
	return startSetup(t, setup{device: "cpu", parallel: parallel, ctx: ctx, queue: queue, key: key, delay: delay, loras: loras})
}

// setup is a test server's model and engine: the built-in model on device with parallel
// sequences of ctx tokens (on "gpu": paged sequences sharing a KV cache of kvSize positions),
// queue waiting requests, an API key, a delay before every decode step and LoRA adapters.
type setup struct {
	device                       string
	parallel, ctx, queue, kvSize int
	key                          string
	delay                        time.Duration
	loras                        []bitgpu.LoRA
}

// startSetup serves the built-in model as o says; everything is closed when the test ends.
func startSetup(t *testing.T, o setup) *testServer {
	t.Helper()
	m, err := bitgpu.Open("", bitgpu.Options{Device: o.device, Ctx: o.ctx, LoRA: o.loras})
	require.NoError(t, err)
	var backends []runtime.Backend
	var pool bitgpu.KVPool
	if o.device == "gpu" {
		backends, pool, err = m.NewPagedSequences(o.parallel, o.kvSize)
		require.NoError(t, err)
	} else {
		_, b := m.Internals()
		backends = []runtime.Backend{b}
		for len(backends) < o.parallel {
			s, err := m.NewSequence()
			require.NoError(t, err)
			backends = append(backends, s)
		}
	}
	slots := backends
	if o.delay > 0 {
		slots = nil
		for _, b := range backends {
			slots = append(slots, slowBackend{b, o.delay})
		}
	}
	var scales []float32
	var infos []httpapi.LoRAAdapter
	for _, l := range o.loras {
		scales, infos = append(scales, l.Scale), append(infos, httpapi.LoRAAdapter{Path: l.Path, Scale: l.Scale})
	}
	eng, err := serve.New(serve.Options{Backends: slots, Tokenizer: tokenizer(m), Context: m.Context(), Queue: o.queue, LoRAScales: scales, KVPool: pool})
	require.NoError(t, err)
	ts := &testServer{m: m, eng: eng, log: &syncBuffer{}}
	ts.api = httpapi.New(httpapi.Options{ModelName: "tiny", APIKey: o.key, Log: ts.log, LoRA: infos})
	ts.api.SetEngine(eng, m.Config().ChatTemplate)
	ts.srv = httptest.NewServer(ts.api)
	t.Cleanup(func() {
		ts.srv.Close()
		require.NoError(t, eng.Shutdown(context.Background()))
		_, own := m.Internals()
		for _, b := range backends {
			if b != own {
				b.Close()
			}
		}
		if pool != nil {
			require.NoError(t, pool.Close())
		}
		m.Close()
	})
	return ts
}

// tokenizer is m's tokenizer.
func tokenizer(m *bitgpu.Model) model.Tokenizer {
	mm, _ := m.Internals()
	return mm.Tokenizer
}

// client is an OpenAI client of ts (no retries, so a 503 shows).
func (ts *testServer) client(opts ...option.RequestOption) *openai.Client {
	c := openai.NewClient(append([]option.RequestOption{option.WithBaseURL(ts.srv.URL + "/v1/"),
		option.WithAPIKey("unused"), option.WithMaxRetries(0)}, opts...)...)
	return &c
}

// post sends body to path and returns the status, headers and body.
func (ts *testServer) post(t *testing.T, path, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(data)
}

// greedy is what the library's Generate (as `bitgpu generate --temp 0`) gives for prompt.
func greedy(t *testing.T, prompt string, n int) string {
	t.Helper()
	m, err := bitgpu.Open("", bitgpu.Options{Device: "cpu", Ctx: 256})
	require.NoError(t, err)
	defer m.Close()
	res, err := m.Generate(context.Background(), prompt, bitgpu.GenerateOptions{MaxTokens: n}, nil)
	require.NoError(t, err)
	return res.Text
}

func completionParams(prompt string, n int64) openai.CompletionNewParams {
	return openai.CompletionNewParams{Model: "tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
		MaxTokens: openai.Int(n), Temperature: openai.Float(0)}
}

func TestCompletionsGreedyEqualsGenerate(t *testing.T) {
	ts := start(t, 2, 256, 8, "")
	c := ts.client()
	want := greedy(t, "The Python interpreter", 16)
	got, err := c.Completions.New(context.Background(), completionParams("The Python interpreter", 16))
	require.NoError(t, err)
	require.Len(t, got.Choices, 1)
	require.Equal(t, want, got.Choices[0].Text)
	require.Equal(t, openai.CompletionChoiceFinishReasonLength, got.Choices[0].FinishReason)
	require.EqualValues(t, 16, got.Usage.CompletionTokens)
	require.EqualValues(t, len(ts.m.Tokenize("The Python interpreter", true))+1, got.Usage.PromptTokens) // + BOS
	require.Equal(t, "text_completion", string(got.Object))

	// Streamed: the same text in pieces, then [DONE].
	st := c.Completions.NewStreaming(context.Background(), completionParams("The Python interpreter", 16))
	var text string
	finish := ""
	for st.Next() {
		ch := st.Current()
		if len(ch.Choices) > 0 {
			text += ch.Choices[0].Text
			if ch.Choices[0].FinishReason != "" {
				finish = string(ch.Choices[0].FinishReason)
			}
		}
	}
	require.NoError(t, st.Err())
	require.Equal(t, want, text)
	require.Equal(t, "length", finish)

	// A prompt given as token ids is the same request.
	ids := ts.m.Tokenize("The Python interpreter", true)
	toks := make([]int64, len(ids))
	for i, id := range ids {
		toks[i] = int64(id)
	}
	p := completionParams("", 16)
	p.Prompt = openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: toks}
	got, err = c.Completions.New(context.Background(), p)
	require.NoError(t, err)
	require.Equal(t, want, got.Choices[0].Text)

	// The raw event stream ends with data: [DONE].
	code, hdr, body := ts.post(t, "/v1/completions", `{"prompt":"Hello","max_tokens":3,"temperature":0,"stream":true}`)
	require.Equal(t, 200, code)
	require.Equal(t, "text/event-stream", hdr.Get("Content-Type"))
	require.True(t, strings.HasSuffix(body, "data: [DONE]\n\n"), body)
	require.Contains(t, ts.log.String(), "POST /v1/completions 200 tokens=")
}

func TestChatCompletions(t *testing.T) {
	ts := start(t, 2, 256, 8, "")
	c := ts.client()
	params := openai.ChatCompletionNewParams{Model: "tiny", MaxTokens: openai.Int(12), Temperature: openai.Float(0),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("You are terse."), openai.UserMessage("What is a list?")}}
	got, err := c.Chat.Completions.New(context.Background(), params)
	require.NoError(t, err)
	require.Len(t, got.Choices, 1)
	reply := got.Choices[0].Message.Content
	require.NotEmpty(t, reply)
	require.EqualValues(t, 12, got.Usage.CompletionTokens)

	// The library's Chat gives the same reply (same template, greedy).
	m, err := bitgpu.Open("", bitgpu.Options{Device: "cpu", Ctx: 256})
	require.NoError(t, err)
	defer m.Close()
	chat, err := m.Chat("You are terse.", bitgpu.GenerateOptions{MaxTokens: 12})
	require.NoError(t, err)
	res, err := chat.Send(context.Background(), "What is a list?", nil)
	require.NoError(t, err)
	require.Equal(t, res.Text, reply)

	// Streamed, with usage last.
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	st := c.Chat.Completions.NewStreaming(context.Background(), params)
	var text, role string
	var usage int64
	for st.Next() {
		ch := st.Current()
		if len(ch.Choices) > 0 {
			text += ch.Choices[0].Delta.Content
			if ch.Choices[0].Delta.Role != "" {
				role = ch.Choices[0].Delta.Role
			}
		}
		if ch.Usage.TotalTokens > 0 {
			usage = ch.Usage.CompletionTokens
		}
	}
	require.NoError(t, st.Err())
	require.Equal(t, reply, text)
	require.Equal(t, "assistant", role)
	require.EqualValues(t, 12, usage)
}

func TestStopStrings(t *testing.T) {
	ts := start(t, 1, 256, 8, "")
	c := ts.client()
	full := greedy(t, "Once upon a time", 24)
	require.Greater(t, len(full), 12)
	stop := full[8:11]
	cut := strings.Index(full, stop)
	p := completionParams("Once upon a time", 24)
	p.Stop = openai.CompletionNewParamsStopUnion{OfStringArray: []string{"never appears", stop}}
	got, err := c.Completions.New(context.Background(), p)
	require.NoError(t, err)
	require.Equal(t, full[:cut], got.Choices[0].Text)
	require.Equal(t, openai.CompletionChoiceFinishReasonStop, got.Choices[0].FinishReason)

	st := c.Completions.NewStreaming(context.Background(), p)
	var text string
	for st.Next() {
		if ch := st.Current(); len(ch.Choices) > 0 {
			text += ch.Choices[0].Text
		}
	}
	require.NoError(t, st.Err())
	require.Equal(t, full[:cut], text)

	// A single string works too.
	code, _, body := ts.post(t, "/v1/completions", fmt.Sprintf(`{"prompt":"Once upon a time","max_tokens":24,"temperature":0,"stop":%q}`, stop))
	require.Equal(t, 200, code, body)
	require.Contains(t, body, `"finish_reason":"stop"`)
}

func TestLogprobs(t *testing.T) {
	ts := start(t, 1, 256, 8, "")
	c := ts.client()
	params := openai.ChatCompletionNewParams{Model: "tiny", MaxTokens: openai.Int(6), Temperature: openai.Float(0),
		Logprobs: openai.Bool(true), TopLogprobs: openai.Int(3),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")}}
	got, err := c.Chat.Completions.New(context.Background(), params)
	require.NoError(t, err)
	lps := got.Choices[0].Logprobs.Content
	require.Len(t, lps, 6)
	var text string
	for _, lp := range lps {
		require.Less(t, lp.Logprob, 0.0)
		require.Len(t, lp.TopLogprobs, 3)
		// Greedy: the token chosen is the most likely one.
		require.Equal(t, lp.TopLogprobs[0].Token, lp.Token)
		require.Equal(t, lp.TopLogprobs[0].Logprob, lp.Logprob)
		require.GreaterOrEqual(t, lp.TopLogprobs[0].Logprob, lp.TopLogprobs[1].Logprob)
		require.GreaterOrEqual(t, lp.TopLogprobs[1].Logprob, lp.TopLogprobs[2].Logprob)
		text += lp.Token
	}
	require.Equal(t, got.Choices[0].Message.Content, text)

	// Completions: the legacy shape.
	p := completionParams("Hello", 4)
	p.Logprobs = openai.Int(2)
	cg, err := c.Completions.New(context.Background(), p)
	require.NoError(t, err)
	l := cg.Choices[0].Logprobs
	require.Len(t, l.Tokens, 4)
	require.Len(t, l.TokenLogprobs, 4)
	require.Len(t, l.TopLogprobs, 4)
	require.Equal(t, []int64{0, int64(len(l.Tokens[0])), int64(len(l.Tokens[0]) + len(l.Tokens[1])),
		int64(len(l.Tokens[0]) + len(l.Tokens[1]) + len(l.Tokens[2]))}, l.TextOffset)
	require.Equal(t, cg.Choices[0].Text, strings.Join(l.Tokens, ""))
}

func TestRequestErrors(t *testing.T) {
	ts := start(t, 1, 64, 8, "")
	for _, tc := range []struct{ path, body, param string }{
		{"/v1/completions", `{"prompt":"x",`, ""},
		{"/v1/completions", `[1,2]`, ""},
		{"/v1/completions", `{"prompt":"x","max_tokens":"12"}`, "max_tokens"},
		{"/v1/completions", `{"prompt":"x","max_tokens":1.5}`, "max_tokens"},
		{"/v1/completions", `{"prompt":"x","temperature":"hot"}`, "temperature"},
		{"/v1/completions", `{"prompt":"x","stop":7}`, "stop"},
		{"/v1/completions", `{"prompt":"x","stream":"yes"}`, "stream"},
		{"/v1/completions", `{"prompt":"x","n":2}`, "n"},
		{"/v1/completions", `{"prompt":true}`, "prompt"},
		{"/v1/completions", `{"prompt":["a","b"]}`, "prompt"},
		{"/v1/completions", `{"prompt":"x","top_p":2}`, "top_p"},
		{"/v1/completions", `{"prompt":"x","seed":"1"}`, "seed"},
		{"/v1/completions", `{"prompt":"x","stream_options":{"include_usage":1}}`, "stream_options.include_usage"},
		{"/v1/chat/completions", `{"messages":"hi"}`, "messages"},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":5}]}`, "messages[0].content"},
		{"/v1/chat/completions", `{"messages":[{"role":"robot","content":"x"}]}`, "messages[0].role"},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"top_logprobs":"3"}`, "top_logprobs"},
		{"/detokenize", `{"tokens":"abc"}`, "tokens"},
	} {
		code, _, body := ts.post(t, tc.path, tc.body)
		require.Equal(t, 400, code, "%s %s: %s", tc.path, tc.body, body)
		var e struct {
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Param   *string `json:"param"`
			} `json:"error"`
		}
		require.NoError(t, json.Unmarshal([]byte(body), &e), body)
		require.Equal(t, "invalid_request_error", e.Error.Type, body)
		require.NotEmpty(t, e.Error.Message)
		if tc.param != "" {
			require.NotNil(t, e.Error.Param, body)
			require.Equal(t, tc.param, *e.Error.Param, body)
		}
	}
	// Unknown fields are ignored.
	code, _, body := ts.post(t, "/v1/completions", `{"prompt":"x","max_tokens":2,"frequency_penalty":0.5,"whatever":{"a":[1]}}`)
	require.Equal(t, 200, code, body)

	// Too long a prompt: 400 naming its token count and the limit, through the OpenAI client.
	long := strings.Repeat("hello world ", 100)
	n := len(ts.m.Tokenize(long, true)) + 1
	_, err := ts.client().Completions.New(context.Background(), completionParams(long, 4))
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 400, apiErr.StatusCode)
	require.Equal(t, "prompt", apiErr.Param)
	require.Equal(t, "context_length_exceeded", apiErr.Code)
	require.Contains(t, apiErr.Message, fmt.Sprintf("%d tokens", n))
	require.Contains(t, apiErr.Message, "64 tokens")
	// The client reports the field of a wrong type too.
	_, err = ts.client(option.WithJSONSet("max_tokens", "lots")).Completions.New(context.Background(), completionParams("x", 4))
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 400, apiErr.StatusCode)
	require.Equal(t, "max_tokens", apiErr.Param)
}

// longStream starts a streamed completion that runs for hundreds of tokens and returns once its
// first chunk arrived, with the response (whose Body the caller closes to disconnect).
func (ts *testServer) longStream(t *testing.T, ctx context.Context) (*http.Response, *bufio.Reader) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.srv.URL+"/v1/completions",
		strings.NewReader(`{"prompt":"Once","max_tokens":100000,"ignore_eos":true,"temperature":0,"stream":true}`))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	r := bufio.NewReader(resp.Body)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(line, "data: {"), line)
	return resp, r
}

// waitIdle waits until the engine runs and queues nothing.
func (ts *testServer) waitIdle(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { s := ts.eng.Stats(); return s.Running == 0 && s.Queued == 0 }, 10*time.Second, 5*time.Millisecond)
}

func TestFullQueueAndDisconnect(t *testing.T) {
	ts := startSlow(t, 1, 256, -1, "", 20*time.Millisecond) // one slot, no queue; 5 s for the context
	ctx, cancel := context.WithCancel(context.Background())
	resp, _ := ts.longStream(t, ctx)
	require.Equal(t, 1, ts.eng.Stats().Running)

	// The slot is taken and nothing may wait: 503 with Retry-After.
	_, err := ts.client().Completions.New(context.Background(), completionParams("x", 2))
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 503, apiErr.StatusCode)
	require.Equal(t, "1", apiErr.Response.Header.Get("Retry-After"))

	// Disconnecting mid-stream frees the slot at the next step.
	steps := ts.eng.Stats().Steps
	cancel()
	resp.Body.Close()
	ts.waitIdle(t)
	require.Less(t, ts.eng.Stats().Steps-steps, int64(50), "the cancelled stream stopped within a few steps")
	require.Zero(t, ts.eng.Stats().KVBlocksUsed)
	got, err := ts.client().Completions.New(context.Background(), completionParams("x", 2))
	require.NoError(t, err)
	require.Len(t, got.Choices, 1)
	require.Eventually(t, func() bool {
		code, _, metrics := getURL(t, ts.srv.URL+"/metrics", "")
		return code == 200 && strings.Contains(metrics, `bitgpu_generations_total{finish_reason="canceled"} 1`) &&
			strings.Contains(metrics, `bitgpu_requests_total{path="/v1/completions",status="503"} 1`)
	}, 10*time.Second, 10*time.Millisecond)
}

// getURL GETs url with an optional bearer key.
func getURL(t *testing.T, url, key string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(data)
}

func TestAPIKey(t *testing.T) {
	ts := start(t, 1, 128, 8, "sesame")
	code, _, _ := getURL(t, ts.srv.URL+"/health", "")
	require.Equal(t, 200, code)
	for _, path := range []string{"/metrics", "/v1/models"} {
		code, _, body := getURL(t, ts.srv.URL+path, "")
		require.Equal(t, 401, code, path)
		require.Contains(t, body, "invalid_api_key")
		code, _, _ = getURL(t, ts.srv.URL+path, "wrong")
		require.Equal(t, 401, code, path)
		code, _, _ = getURL(t, ts.srv.URL+path, "sesame")
		require.Equal(t, 200, code, path)
	}
	code, _, _ = ts.post(t, "/tokenize", `{"content":"hi"}`)
	require.Equal(t, 401, code)
	_, err := ts.client().Completions.New(context.Background(), completionParams("x", 2))
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 401, apiErr.StatusCode)
	got, err := ts.client(option.WithAPIKey("sesame")).Completions.New(context.Background(), completionParams("x", 2))
	require.NoError(t, err)
	require.Len(t, got.Choices, 1)
}

func TestHealthModelsTokenize(t *testing.T) {
	api := httpapi.New(httpapi.Options{ModelName: "tiny"})
	srv := httptest.NewServer(api)
	defer srv.Close()
	code, _, _ := getURL(t, srv.URL+"/health", "")
	require.Equal(t, 503, code, "loading")
	code, _, _ = getURL(t, srv.URL+"/v1/models", "")
	require.Equal(t, 503, code, "loading")

	ts := start(t, 1, 128, 8, "")
	ts.api.SetEngine(ts.eng, ts.m.Config().ChatTemplate)
	api.SetEngine(ts.eng, ts.m.Config().ChatTemplate)
	code, _, body := getURL(t, srv.URL+"/health", "")
	require.Equal(t, 200, code)
	require.JSONEq(t, `{"status":"ok"}`, body)
	api.SetDraining()
	code, _, _ = getURL(t, srv.URL+"/health", "")
	require.Equal(t, 503, code, "draining")

	models, err := ts.client().Models.List(context.Background())
	require.NoError(t, err)
	require.Len(t, models.Data, 1)
	require.Equal(t, "tiny", models.Data[0].ID)

	code, _, body = ts.post(t, "/tokenize", `{"content":"Hello world"}`)
	require.Equal(t, 200, code)
	var tk struct{ Tokens []int }
	require.NoError(t, json.Unmarshal([]byte(body), &tk))
	require.Equal(t, ts.m.Tokenize("Hello world", true), tk.Tokens)
	code, _, body = ts.post(t, "/tokenize", `{"content":"Hello world","add_special":true,"with_pieces":true}`)
	require.Equal(t, 200, code)
	require.Contains(t, body, `"piece":"H"`)
	ids, _ := json.Marshal(tk.Tokens)
	code, _, body = ts.post(t, "/detokenize", `{"tokens":`+string(ids)+`}`)
	require.Equal(t, 200, code)
	require.JSONEq(t, `{"content":"Hello world"}`, body)
	code, _, _ = ts.post(t, "/detokenize", `{"tokens":[999999]}`)
	require.Equal(t, 400, code)
}

// run is one request of the batch-invariance test and its outcome.
type run struct {
	prompt string
	temp   float64
	seed   int64
	text   string
}

// invarianceRuns are 16 requests of 20 tokens: 8 prompts, each greedy and seeded, with the texts
// one CPU slot gives them one at a time (the greedy ones checked against `bitgpu generate`).
func invarianceRuns(t *testing.T) []*run {
	t.Helper()
	prompts := []string{"The Python interpreter", "Once upon a time", "import os", "Hello", "In 1999 the",
		"def f(x):", "The capital of France is", "A list is"}
	var runs []*run
	for i, p := range prompts {
		runs = append(runs, &run{prompt: p}, &run{prompt: p, temp: 0.9, seed: int64(100 + i)})
	}
	alone := start(t, 1, 256, 8, "")
	for _, r := range runs {
		text, err := r.complete(alone)
		require.NoError(t, err)
		r.text = text
	}
	for _, r := range runs[:4] {
		if r.temp == 0 {
			require.Equal(t, greedy(t, r.prompt, 20), r.text, "greedy equals bitgpu generate")
		}
	}
	return runs
}

// complete sends r's request to ts and returns the text.
func (r *run) complete(ts *testServer) (string, error) {
	p := completionParams(r.prompt, 20)
	p.Temperature, p.Seed = openai.Float(r.temp), openai.Int(r.seed)
	got, err := ts.client().Completions.New(context.Background(), p)
	if err != nil {
		return "", err
	}
	return got.Choices[0].Text, nil
}

// requireSameTexts sends every run to ts at once and requires each reply to be the run's text.
func requireSameTexts(t *testing.T, ts *testServer, runs []*run) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(runs))
	for _, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			text, err := r.complete(ts)
			if err == nil && text != r.text {
				err = fmt.Errorf("%q (temp %v seed %d): together %q, alone %q", r.prompt, r.temp, r.seed, text, r.text)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestConcurrentClientsBatchInvariance(t *testing.T) {
	runs := invarianceRuns(t)
	// Together: 4 slots, all at once.
	requireSameTexts(t, start(t, 4, 256, 64, ""), runs)
}

// loadResult is what runLoad saw: the errors, the tokens the clients got (streamed chunks or
// usage.completion_tokens) and the most requests running when a client finished.
type loadResult struct {
	errs                  []error
	generated, maxRunning int
}

// runLoad sends clients sampled completions of tokens tokens each to ts at once, half streamed,
// with opts on every request, and waits for all (5 minutes at most). A non-streamed reply with fewer than tokens completion tokens counts as an error when full is set
// (the requests then ignore the end of text).
func runLoad(t *testing.T, ts *testServer, clients, tokens int, full bool, opts ...option.RequestOption) loadResult {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var res loadResult
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := completionParams(fmt.Sprintf("Client %d says", i), int64(tokens))
			p.Temperature, p.Seed = openai.Float(0.8), openai.Int(int64(i))
			var err error
			n := 0
			if i%2 == 0 {
				st := ts.client().Completions.NewStreaming(ctx, p, opts...)
				for st.Next() {
					n++
				}
				err = st.Err()
			} else {
				var got *openai.Completion
				if got, err = ts.client().Completions.New(ctx, p, opts...); err == nil {
					n = int(got.Usage.CompletionTokens)
					if full && n != tokens {
						err = fmt.Errorf("client %d: %d tokens, want %d", i, n, tokens)
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			res.maxRunning = max(res.maxRunning, ts.eng.Stats().Running)
			if err != nil {
				res.errs = append(res.errs, err)
			}
			res.generated += n
		}()
	}
	wg.Wait()
	return res
}

func TestLoad(t *testing.T) {
	const clients, tokens = 16, 16
	ts := start(t, 4, 256, 64, "")
	require.Empty(t, runLoad(t, ts, clients, tokens, false).errs)
	ts.waitIdle(t)
	st := ts.eng.Stats()
	require.Zero(t, st.KVBlocksUsed)
	// A request is counted when its handler returns, just after the client has the whole reply.
	var metrics string
	require.Eventually(t, func() bool {
		_, _, metrics = getURL(t, ts.srv.URL+"/metrics", "")
		return strings.Contains(metrics, fmt.Sprintf(`bitgpu_requests_total{path="/v1/completions",status="200"} %d`, clients))
	}, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, metrics, fmt.Sprintf("bitgpu_time_to_first_token_seconds_count %d", clients))
	require.Contains(t, metrics, "bitgpu_requests_running 0")
	require.Contains(t, metrics, fmt.Sprintf("bitgpu_decode_steps_total %d\n", st.DecodeTokens))
	require.Contains(t, metrics, fmt.Sprintf("bitgpu_batched_steps_total %d\n", st.BatchedSteps))
	require.Contains(t, metrics, fmt.Sprintf("bitgpu_batched_tokens_total %d\n", st.BatchedTokens))
	require.Positive(t, st.DecodeTokens)
	t.Logf("%d clients × %d tokens: 0 errors, %d scheduler rounds, %d decode steps, %d of them in %d batched steps",
		clients, tokens, st.Steps, st.DecodeTokens, st.BatchedTokens, st.BatchedSteps)
}

func TestShutdownWithRequestsInFlight(t *testing.T) {
	ts := startSlow(t, 2, 256, 8, "", 5*time.Millisecond)
	// One bounded request in flight finishes; the endless one is cancelled at the deadline.
	done := make(chan error, 1)
	go func() {
		_, err := ts.client().Completions.New(context.Background(), completionParams("Hello", 10))
		done <- err
	}()
	resp, r := ts.longStream(t, context.Background())
	defer resp.Body.Close()
	require.Eventually(t, func() bool { return ts.eng.Stats().Running == 2 }, 10*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := ts.eng.Shutdown(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, <-done, "the bounded request finished within the grace period")
	rest, _ := io.ReadAll(r)
	require.Contains(t, string(rest), "shutting down", "the stream ends with an error event")
	require.False(t, strings.Contains(string(rest), "[DONE]"))
	// New requests are refused.
	_, err = ts.client().Completions.New(context.Background(), completionParams("x", 2))
	var apiErr *openai.Error
	require.True(t, errors.As(err, &apiErr), "%v", err)
	require.Equal(t, 503, apiErr.StatusCode)
}
