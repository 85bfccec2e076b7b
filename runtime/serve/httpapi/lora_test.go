package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu"
	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/model"
)

// loraFile writes a random adapter for the built-in model as a GGUF LoRA file.
func loraFile(t *testing.T, rank int, seed uint64) string {
	t.Helper()
	m, err := assets.Open()
	require.NoError(t, err)
	defer m.Close()
	l, err := model.SynthLoRA(m.Config, rank, float32(2*rank), 1, seed, nil)
	require.NoError(t, err)
	require.NoError(t, l.Check(m))
	path := filepath.Join(t.TempDir(), fmt.Sprintf("lora%d.gguf", seed))
	require.NoError(t, model.WriteLoRAGGUF(path, l))
	return path
}

// TestPerRequestLoRA: with two adapters loaded (scales 1 and 0.5), requests choose their own
// scales with llama-server's "lora" field through the OpenAI client, run side by side, and each
// gets exactly the text `bitgpu generate --lora ...` with those scales gives; a request without
// the field uses the load-time scales; GET /lora-adapters lists the adapters; bad fields are 400s
// naming the field.
func TestPerRequestLoRA(t *testing.T) {
	a, b := loraFile(t, 8, 1), loraFile(t, 4, 2)
	loras := []bitgpu.LoRA{{Path: a, Scale: 1}, {Path: b, Scale: 0.5}}
	const prompt, n = "The Python interpreter", 16
	want := func(scales ...float32) string {
		var ls []bitgpu.LoRA
		for i, s := range scales {
			ls = append(ls, bitgpu.LoRA{Path: loras[i].Path, Scale: s})
		}
		m, err := bitgpu.Open("", bitgpu.Options{Device: "cpuref", Ctx: 256, LoRA: ls})
		require.NoError(t, err)
		defer m.Close()
		res, err := m.Generate(context.Background(), prompt, bitgpu.GenerateOptions{MaxTokens: n, IgnoreEOS: true}, nil)
		require.NoError(t, err)
		return res.Text
	}
	cases := []struct {
		field  any // the "lora" field; nil: absent
		scales []float32
	}{
		{nil, []float32{1, 0.5}},
		{[]map[string]any{{"id": 1, "scale": 1}}, []float32{0, 1}},
		{[]map[string]any{}, []float32{0, 0}},
		{[]map[string]any{{"id": 0, "scale": 0.25}, {"id": 1, "scale": -1}}, []float32{0.25, -1}},
	}
	texts := map[string]bool{}
	for i := range cases {
		texts[want(cases[i].scales...)] = true
	}
	require.Len(t, texts, len(cases), "every scale set gives its own text")

	ts := startWith(t, 4, 256, 8, "", 0, loras)
	var wg sync.WaitGroup
	errs := make(chan error, len(cases))
	for _, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := completionParams(prompt, n)
			var opts []option.RequestOption
			if c.field != nil {
				opts = append(opts, option.WithJSONSet("lora", c.field))
			}
			opts = append(opts, option.WithJSONSet("ignore_eos", true))
			got, err := ts.client().Completions.New(context.Background(), p, opts...)
			if err == nil && got.Choices[0].Text != want(c.scales...) {
				err = fmt.Errorf("lora %v: got %q, want %q", c.field, got.Choices[0].Text, want(c.scales...))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	code, _, body := getURL(t, ts.srv.URL+"/lora-adapters", "")
	require.Equal(t, 200, code)
	var list []map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &list))
	require.Equal(t, []map[string]any{{"id": 0.0, "path": a, "scale": 1.0}, {"id": 1.0, "path": b, "scale": 0.5}}, list)

	for _, c := range []struct{ body, param string }{
		{`{"prompt": "x", "lora": {"id": 0}}`, "lora"},
		{`{"prompt": "x", "lora": [{"id": 2, "scale": 1}]}`, "lora[0].id"},
		{`{"prompt": "x", "lora": [{"id": 0}, {"id": 0}]}`, "lora[1].id"},
		{`{"prompt": "x", "lora": [{"id": 0, "scale": "big"}]}`, "lora[0].scale"},
		{`{"prompt": "x", "lora": [{"id": 0, "scale": 1e300}]}`, "lora[0].scale"},
	} {
		code, _, body := ts.post(t, "/v1/completions", c.body)
		require.Equal(t, 400, code, c.body)
		var e struct {
			Error struct{ Param string } `json:"error"`
		}
		require.NoError(t, json.Unmarshal([]byte(body), &e), body)
		require.Equal(t, c.param, e.Error.Param, body)
	}
}
