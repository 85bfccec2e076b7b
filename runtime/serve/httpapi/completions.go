package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/bitgpu/bitgpu/model"
	"github.com/bitgpu/bitgpu/runtime"
	"github.com/bitgpu/bitgpu/runtime/serve"
)

// MaxTopLogprobs is the most alternatives a request may ask for at each token.
const MaxTopLogprobs = 20

// common are the request fields /v1/completions and /v1/chat/completions share.
type common struct {
	req          serve.Request
	stream       bool
	includeUsage bool
}

// readFields reads and decodes r's body.
func readFields(w http.ResponseWriter, r *http.Request) (fields, *apiError) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error",
				Message: fmt.Sprintf("the request body is larger than %d bytes", MaxBodyBytes)}
		}
		return nil, badRequest("", "reading the request body: %v", err)
	}
	return parseBody(data)
}

// parseCommon reads the sampling, stopping and streaming fields; maxName lists the names the
// token limit may have.
func (s *Server) parseCommon(f fields, maxNames ...string) (c common, e *apiError) {
	o := DefaultSampling
	if s.opts.Sampling != nil {
		o = *s.opts.Sampling
	}
	if n, e := f.integer("n", 1); e != nil {
		return c, e
	} else if n != 1 {
		return c, badRequest("n", "n = %d: only n = 1 is supported", n)
	}
	for _, name := range maxNames {
		v, e := f.integer(name, 0)
		if e != nil {
			return c, e
		}
		if v < 0 {
			return c, badRequest(name, "%s = %d: must be >= 0", name, v)
		}
		if f.has(name) {
			c.req.MaxTokens = int(min(v, 1<<30))
			if v == 0 {
				c.req.MaxTokens = 0 // 0: to the end of the context, as when absent
			}
		}
	}
	if o.Temperature, e = f.number("temperature", o.Temperature); e != nil {
		return c, e
	}
	if o.Temperature < 0 {
		return c, badRequest("temperature", "temperature = %v: must be >= 0", o.Temperature)
	}
	if o.TopP, e = f.number("top_p", o.TopP); e != nil {
		return c, e
	}
	if !(o.TopP > 0 && o.TopP <= 1) {
		return c, badRequest("top_p", "top_p = %v: must be in (0, 1]", o.TopP)
	}
	topK, e := f.integer("top_k", int64(o.TopK))
	if e != nil {
		return c, e
	}
	if topK < 0 || topK > 1<<30 {
		return c, badRequest("top_k", "top_k = %d: must be >= 0 (0 keeps every token)", topK)
	}
	o.TopK = int(topK)
	if o.MinP, e = f.number("min_p", o.MinP); e != nil {
		return c, e
	}
	if !(o.MinP >= 0 && o.MinP <= 1) {
		return c, badRequest("min_p", "min_p = %v: must be in [0, 1]", o.MinP)
	}
	rp := o.RepeatPenalty
	if rp == 0 {
		rp = 1
	}
	if o.RepeatPenalty, e = f.number("repeat_penalty", rp); e != nil {
		return c, e
	}
	if !(o.RepeatPenalty > 0) {
		return c, badRequest("repeat_penalty", "repeat_penalty = %v: must be > 0 (1 is off)", o.RepeatPenalty)
	}
	seed, e := f.integer("seed", -1)
	if e != nil {
		return c, e
	}
	if seed < 0 {
		o.Seed = mrand.Uint64() >> 1
	} else {
		o.Seed = uint64(seed)
	}
	c.req.Sampler = o
	if c.req.Stop, e = f.stops("stop"); e != nil {
		return c, e
	}
	if c.req.IgnoreEOS, e = f.boolean("ignore_eos", false); e != nil {
		return c, e
	}
	if c.stream, e = f.boolean("stream", false); e != nil {
		return c, e
	}
	so, e := f.object("stream_options")
	if e != nil {
		return c, e
	}
	if c.includeUsage, e = so.boolean("include_usage", false); e != nil {
		e.Param = "stream_options.include_usage"
		return c, e
	}
	if _, e = f.str("model", ""); e != nil {
		return c, e
	}
	return c, nil
}

// newID returns a response id with prefix.
func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// finishReason is OpenAI's finish_reason for a stop reason.
func finishReason(r runtime.StopReason) string {
	switch r {
	case runtime.StopLength, runtime.StopContext:
		return "length"
	case runtime.StopCanceled:
		return "canceled"
	}
	return "stop"
}

// usage is the usage object of a result.
func usage(res serve.Result) map[string]int {
	return map[string]int{"prompt_tokens": res.PromptTokens, "completion_tokens": len(res.Tokens),
		"total_tokens": res.PromptTokens + len(res.Tokens)}
}

// events writes a server-sent event stream; its headers go out with the first event.
type events struct {
	w       http.ResponseWriter
	started bool
}

// send writes v as one `data:` event and flushes it.
func (ev *events) send(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return ev.raw(data)
}

// raw writes data as one `data:` event and flushes it.
func (ev *events) raw(data []byte) error {
	if !ev.started {
		h := ev.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		ev.w.WriteHeader(http.StatusOK)
		ev.started = true
	}
	if _, err := fmt.Fprintf(ev.w, "data: %s\n\n", data); err != nil {
		return err
	}
	return http.NewResponseController(ev.w).Flush()
}

// run submits c's request, streaming when asked: chunk builds one event from a piece (and a
// finish reason on the last one), final the non-streamed reply. param names the prompt field.
func (s *Server) run(w http.ResponseWriter, r *http.Request, b *backend, c common, param string,
	chunk func(p serve.Piece, finish *string) any, final func(res serve.Result) any) {
	in := info(r)
	in.prompt = len(c.req.Prompt)
	ev := &events{w: w}
	if c.stream {
		c.req.OnPiece = func(p serve.Piece) error { return ev.send(chunk(p, nil)) }
	}
	res, err := b.eng.Submit(r.Context(), c.req)
	in.generated = len(res.Tokens)
	s.m.observe(res, err)
	if err != nil {
		e := s.engineError(err, param)
		if ev.started {
			_ = ev.send(e.body())
			return
		}
		writeError(w, e)
		return
	}
	if !c.stream {
		writeJSON(w, http.StatusOK, final(res))
		return
	}
	reason := finishReason(res.Stop)
	if err := ev.send(chunk(serve.Piece{}, &reason)); err != nil {
		return
	}
	if c.includeUsage {
		u := chunk(serve.Piece{}, nil).(map[string]any)
		u["choices"], u["usage"] = []any{}, usage(res)
		if err := ev.send(u); err != nil {
			return
		}
	}
	_ = ev.raw([]byte("[DONE]"))
}

// begin is how both generation endpoints start: the loaded backend, the request's fields and
// the options common to both (maxNames: the accepted names of the token limit). When ok is false
// the error reply has been written.
func (s *Server) begin(w http.ResponseWriter, r *http.Request, maxNames ...string) (b *backend, f fields, c common, ok bool) {
	if b, f, ok = s.readyFields(w, r); !ok {
		return nil, nil, c, false
	}
	c, e := s.parseCommon(f, maxNames...)
	if e == nil {
		c.req.LoRA, e = f.loras("lora", b.eng.LoRAScales())
	}
	if e != nil {
		writeError(w, e)
		return nil, nil, c, false
	}
	return b, f, c, true
}

// readyFields returns the loaded backend and the request's JSON fields; when ok is false the
// error reply (503 while loading, 400 for a bad body) has been written.
func (s *Server) readyFields(w http.ResponseWriter, r *http.Request) (b *backend, f fields, ok bool) {
	if b = s.ready(w); b == nil {
		return nil, nil, false
	}
	f, e := readFields(w, r)
	if e != nil {
		writeError(w, e)
		return nil, nil, false
	}
	return b, f, true
}

// completions is POST /v1/completions.
func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	b, f, c, ok := s.begin(w, r, "max_tokens")
	if !ok {
		return
	}
	var e *apiError
	tok := b.eng.Tokenizer()
	if c.req.Prompt, e = parsePrompt(f, tok); e != nil {
		writeError(w, e)
		return
	}
	lp, e := f.integer("logprobs", -1)
	if e != nil {
		writeError(w, e)
		return
	}
	if lp > MaxTopLogprobs {
		writeError(w, badRequest("logprobs", "logprobs = %d: at most %d", lp, MaxTopLogprobs))
		return
	}
	c.req.Logprobs, c.req.TopLogprobs = lp >= 0, int(max(lp, 0))
	echo, e := f.boolean("echo", false)
	if e != nil {
		writeError(w, e)
		return
	}
	if echo {
		writeError(w, badRequest("echo", "echo is not supported"))
		return
	}
	id, created := newID("cmpl-"), time.Now().Unix()
	head := func(choices []any) map[string]any {
		return map[string]any{"id": id, "object": "text_completion", "created": created, "model": s.opts.ModelName, "choices": choices}
	}
	choice := func(text string, lps []serve.TokenLogprob, finish *string, offset int) map[string]any {
		ch := map[string]any{"index": 0, "text": text, "logprobs": nil, "finish_reason": nil}
		if finish != nil {
			ch["finish_reason"] = *finish
		}
		if c.req.Logprobs {
			ch["logprobs"] = legacyLogprobs(tok, lps, offset)
		}
		return ch
	}
	offset := 0
	chunk := func(p serve.Piece, finish *string) any {
		ch := choice(p.Text, p.Logprobs, finish, offset)
		for _, t := range p.Logprobs {
			offset += len(t.Bytes)
		}
		return head([]any{ch})
	}
	final := func(res serve.Result) any {
		reason := finishReason(res.Stop)
		out := head([]any{choice(res.Text, res.Logprobs, &reason, 0)})
		out["usage"] = usage(res)
		return out
	}
	s.run(w, r, b, c, "prompt", chunk, final)
}

// legacyLogprobs is the completions API's logprobs object.
func legacyLogprobs(tok model.Tokenizer, lps []serve.TokenLogprob, offset int) map[string]any {
	tokens, values, tops, offsets := []string{}, []float64{}, []any{}, []int{}
	for _, t := range lps {
		tokens = append(tokens, string(t.Bytes))
		values = append(values, t.Logprob)
		top := map[string]float64{}
		for _, a := range t.Top {
			top[string(a.Bytes)] = a.Logprob
		}
		tops = append(tops, top)
		offsets = append(offsets, offset)
		offset += len(t.Bytes)
	}
	return map[string]any{"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}
}

// parsePrompt reads `prompt`: a string, an array of token ids, or an array holding one of
// those. A BOS is added as bitgpu generate adds it.
func parsePrompt(f fields, tok model.Tokenizer) ([]int, *apiError) {
	if !f.has("prompt") {
		return nil, badRequest("prompt", "prompt is required")
	}
	raw := f["prompt"]
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return runtime.EncodePrompt(tok, text), nil
	}
	var ids []int
	if json.Unmarshal(raw, &ids) == nil {
		return withBOS(tok, ids), nil
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil && len(list) > 0 {
		if len(list) > 1 {
			return nil, badRequest("prompt", "prompt: only one prompt per request is supported (got %d)", len(list))
		}
		if json.Unmarshal(list[0], &text) == nil {
			return runtime.EncodePrompt(tok, text), nil
		}
		if json.Unmarshal(list[0], &ids) == nil {
			return withBOS(tok, ids), nil
		}
	}
	return nil, wrongType("prompt", "a string or an array of token ids", raw)
}

// withBOS prefixes ids with tok's BOS when the model wants one and ids lack it.
func withBOS(tok model.Tokenizer, ids []int) []int {
	if tok.AddBOS() && tok.BOS() >= 0 && (len(ids) == 0 || ids[0] != tok.BOS()) {
		return append([]int{tok.BOS()}, ids...)
	}
	return ids
}

// chatCompletions is POST /v1/chat/completions.
func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	b, f, c, ok := s.begin(w, r, "max_tokens", "max_completion_tokens")
	if !ok {
		return
	}
	msgs, e := parseMessages(f)
	if e != nil {
		writeError(w, e)
		return
	}
	tok := b.eng.Tokenizer()
	ids, err := model.EncodeChat(tok, b.template, msgs, true)
	if err != nil {
		writeError(w, badRequest("messages", "%v", err))
		return
	}
	c.req.Prompt = ids
	if c.req.Logprobs, e = f.boolean("logprobs", false); e != nil {
		writeError(w, e)
		return
	}
	top, e := f.integer("top_logprobs", 0)
	if e != nil {
		writeError(w, e)
		return
	}
	if top < 0 || top > MaxTopLogprobs {
		writeError(w, badRequest("top_logprobs", "top_logprobs = %d: must be in [0, %d]", top, MaxTopLogprobs))
		return
	}
	c.req.TopLogprobs = int(top)
	id, created := newID("chatcmpl-"), time.Now().Unix()
	head := func(object string, choices []any) map[string]any {
		return map[string]any{"id": id, "object": object, "created": created, "model": s.opts.ModelName, "choices": choices}
	}
	first := true
	chunk := func(p serve.Piece, finish *string) any {
		delta := map[string]any{}
		if first {
			delta["role"] = "assistant"
			first = false
		}
		if p.Text != "" || finish == nil {
			delta["content"] = p.Text
		}
		ch := map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": nil}
		if finish != nil {
			ch["finish_reason"] = *finish
		}
		if c.req.Logprobs && len(p.Logprobs) > 0 {
			ch["logprobs"] = chatLogprobs(p.Logprobs)
		}
		return head("chat.completion.chunk", []any{ch})
	}
	final := func(res serve.Result) any {
		ch := map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": res.Text},
			"logprobs": nil, "finish_reason": finishReason(res.Stop)}
		if c.req.Logprobs {
			ch["logprobs"] = chatLogprobs(res.Logprobs)
		}
		out := head("chat.completion", []any{ch})
		out["usage"] = usage(res)
		return out
	}
	s.run(w, r, b, c, "messages", chunk, final)
}

// chatLogprobs is the chat API's logprobs object.
func chatLogprobs(lps []serve.TokenLogprob) map[string]any {
	content := []any{}
	for _, t := range lps {
		top := []any{}
		for _, a := range t.Top {
			top = append(top, map[string]any{"token": tokenText(a.Bytes), "logprob": a.Logprob, "bytes": byteList(a.Bytes)})
		}
		content = append(content, map[string]any{"token": tokenText(t.Bytes), "logprob": t.Logprob,
			"bytes": byteList(t.Bytes), "top_logprobs": top})
	}
	return map[string]any{"content": content}
}

// tokenText is a token's bytes as a string (invalid UTF-8 becomes U+FFFD in JSON).
func tokenText(b []byte) string { return string(b) }

// byteList is b as a JSON array of integers (not base64).
func byteList(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

// parseMessages reads `messages`: an array of {role, content}, content a string or an array of
// {type: "text", text} parts.
func parseMessages(f fields) ([]model.ChatMessage, *apiError) {
	if !f.has("messages") {
		return nil, badRequest("messages", "messages is required")
	}
	var list []json.RawMessage
	if err := json.Unmarshal(f["messages"], &list); err != nil {
		return nil, wrongType("messages", "an array", f["messages"])
	}
	if len(list) == 0 {
		return nil, badRequest("messages", "messages must not be empty")
	}
	var msgs []model.ChatMessage
	for i, raw := range list {
		name := fmt.Sprintf("messages[%d]", i)
		var m fields
		if err := json.Unmarshal(raw, &m); err != nil || m == nil {
			return nil, wrongType(name, "an object", raw)
		}
		role, e := m.str("role", "")
		if e != nil {
			e.Param = name + ".role"
			return nil, e
		}
		switch role {
		case "system", "user", "assistant":
		case "developer":
			role = "system"
		default:
			return nil, badRequest(name+".role", "%s.role %q: want system, developer, user or assistant", name, role)
		}
		content, e := messageContent(m, name+".content")
		if e != nil {
			return nil, e
		}
		msgs = append(msgs, model.ChatMessage{Role: role, Content: content})
	}
	return msgs, nil
}

// messageContent reads a message's content: a string, null, or an array of text parts.
func messageContent(m fields, param string) (string, *apiError) {
	if !m.has("content") {
		return "", nil
	}
	raw := m["content"]
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []fields
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", wrongType(param, "a string or an array of content parts", raw)
	}
	var text string
	for j, p := range parts {
		typ, _ := p.str("type", "text")
		if typ != "text" {
			return "", badRequest(fmt.Sprintf("%s[%d].type", param, j), "content part type %q is not supported (only text)", typ)
		}
		t, e := p.str("text", "")
		if e != nil {
			e.Param = fmt.Sprintf("%s[%d].text", param, j)
			return "", e
		}
		text += t
	}
	return text, nil
}

// tokenize is llama-server's POST /tokenize: {"content", "add_special", "parse_special",
// "with_pieces"} → {"tokens": [ids]} or, with_pieces, [{"id", "piece"}].
func (s *Server) tokenize(w http.ResponseWriter, r *http.Request) {
	b, f, ok := s.readyFields(w, r)
	if !ok {
		return
	}
	content, e := f.str("content", "")
	if e != nil {
		writeError(w, e)
		return
	}
	addSpecial, e := f.boolean("add_special", false)
	if e != nil {
		writeError(w, e)
		return
	}
	parseSpecial, e := f.boolean("parse_special", true)
	if e != nil {
		writeError(w, e)
		return
	}
	pieces, e := f.boolean("with_pieces", false)
	if e != nil {
		writeError(w, e)
		return
	}
	tok := b.eng.Tokenizer()
	ids := tok.Encode(content, parseSpecial)
	if addSpecial {
		ids = withBOS(tok, ids)
	}
	info(r).prompt = len(ids)
	if !pieces {
		writeJSON(w, http.StatusOK, map[string]any{"tokens": ids})
		return
	}
	out := []any{}
	for _, id := range ids {
		var piece any = byteList(tok.TokenBytes(id))
		if bs := tok.TokenBytes(id); utf8.Valid(bs) {
			piece = string(bs)
		}
		out = append(out, map[string]any{"id": id, "piece": piece})
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

// detokenize is llama-server's POST /detokenize: {"tokens": [ids]} → {"content"}.
func (s *Server) detokenize(w http.ResponseWriter, r *http.Request) {
	b, f, ok := s.readyFields(w, r)
	if !ok {
		return
	}
	var ids []int
	if f.has("tokens") {
		if err := json.Unmarshal(f["tokens"], &ids); err != nil {
			writeError(w, wrongType("tokens", "an array of token ids", f["tokens"]))
			return
		}
	}
	tok := b.eng.Tokenizer()
	for i, id := range ids {
		if id < 0 || id >= tok.VocabSize() {
			writeError(w, badRequest("tokens", "tokens[%d] = %d: outside the vocabulary [0, %d)", i, id, tok.VocabSize()))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"content": tok.Decode(ids)})
}
