package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBenchE2ECPU: `bench e2e --device cpu` on the tiny preset with its F16 baseline, two thread
// counts, in any build (with or without cgo). The JSON has the GPU report's field names where
// they apply, one run per model and thread count, and bytes per token from the preset's shapes
// (dim 256, 2 layers, 4 heads / 2 KV heads of 64, FFN 768, vocabulary 300, sub-norms):
//
//	ternary weights  2·(786432/4 + 4·1536) + 4·256 = 406528 B   (F16: 2·(786432·2 + 6144) + 1024)
//	q8_0 head        300·256 + 300·8·2 = 81600 B
//	KV               2 layers · 128 · 2 · 2 B = 1024 B a token of context; context 16 + 2/2 steps
func TestBenchE2ECPU(t *testing.T) {
	js := filepath.Join(t.TempDir(), "e2e.json")
	out, errOut, code := runCLI(t, nil, "bench", "e2e", "--device", "cpu", "--preset", "tiny", "--ctx", "16", "--steps", "2",
		"--threads", "1,2", "--rounds", "1", "--lm-head", "q8_0", "--json", js)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "bitgpu: running tiny-I2_S.gguf on cpu, threads [1 2], 1 rounds")
	require.Contains(t, out, "copy bandwidth (64 MiB, 1 threads)")
	require.Contains(t, out, "copy bandwidth (64 MiB, 2 threads)")
	require.Contains(t, out, "0.506 (0.407+0.082+0.017)", "MB read a token, ternary: 406528+81600+17408")
	require.Contains(t, out, "context 16: ternary vs F16 decode speed-up")
	data, err := os.ReadFile(js)
	require.NoError(t, err)
	var rep struct {
		Device struct{ Name, Type, Driver, Kernel string }
		Copy   struct {
			Kernel  string
			Threads int
			Bytes   uint64
			GBps    float64 `json:"gb_per_s"`
		}
		Copies []struct{ Threads int }
		Runs   []struct {
			Model, Weights, Backend string
			LMHead                  string `json:"lm_head"`
			Threads                 int
			CopyGBps                float64   `json:"copy_gb_per_s"`
			Speedup                 []float64 `json:"decode_speedup_vs_first_threads"`
			Points                  []struct {
				Context       int
				DecodeTokS    float64 `json:"decode_tok_per_s"`
				DecodeBytes   uint64  `json:"decode_bytes_per_token"`
				WeightBytes   uint64  `json:"weight_bytes_per_token"`
				HeadBytes     uint64  `json:"lm_head_bytes_per_token"`
				KVBytes       uint64  `json:"kv_bytes_per_token"`
				DeviceBytes   uint64  `json:"device_bytes"`
				Efficiency    float64 `json:"decode_bandwidth_efficiency"`
				RooflineTokS  float64 `json:"roofline_tok_per_s"`
				PrefillTokS   float64 `json:"prefill_tok_per_s"`
				DecodeMSPerTk float64 `json:"decode_ms_per_token"`
			}
		}
		Speedup []float64 `json:"decode_speedup_vs_f16"`
		Memory  []float64 `json:"memory_ratio_vs_f16"`
	}
	require.NoError(t, json.Unmarshal(data, &rep))
	require.Equal(t, "cpu", rep.Device.Type)
	require.Equal(t, "cpu", rep.Device.Driver)
	require.NotEmpty(t, rep.Device.Name)
	require.Equal(t, "copy", rep.Copy.Kernel)
	require.Equal(t, 2, rep.Copy.Threads, "the largest thread count's copy")
	require.Equal(t, uint64(128<<20), rep.Copy.Bytes)
	require.Len(t, rep.Copies, 2)
	require.Len(t, rep.Runs, 4, "ternary and F16, 1 and 2 threads each")
	const kv = 1024 * (16 + 1)
	for i, r := range rep.Runs {
		weights, wantWeights := "ternary", uint64(406528)
		if i >= 2 {
			weights, wantWeights = "f16", 2*(786432*2+6144)+1024
		}
		require.Equal(t, weights, r.Weights)
		require.True(t, strings.HasPrefix(r.Model, "tiny-"), r.Model)
		require.Equal(t, "cpu", r.Backend)
		require.Equal(t, "q8_0", r.LMHead)
		require.Equal(t, 1+i%2, r.Threads)
		require.Equal(t, rep.Copies[i%2].Threads, r.Threads)
		require.Len(t, r.Points, 1)
		p := r.Points[0]
		require.Equal(t, 16, p.Context)
		require.Equal(t, wantWeights, p.WeightBytes)
		require.Equal(t, uint64(81600), p.HeadBytes)
		require.Equal(t, uint64(kv), p.KVBytes)
		require.Equal(t, wantWeights+81600+kv, p.DecodeBytes)
		require.Equal(t, wantWeights+81600+1024*18, p.DeviceBytes)
		require.Greater(t, p.DecodeTokS, 0.0)
		require.Greater(t, p.PrefillTokS, 0.0)
		require.InDelta(t, r.CopyGBps*1e9/float64(p.DecodeBytes), p.RooflineTokS, 1e-6)
		require.InDelta(t, p.DecodeTokS/p.RooflineTokS, p.Efficiency, 1e-12)
		require.Len(t, r.Speedup, 1)
		// One round: the speed-up is the ratio of the two rates, exactly 1 for the first count.
		require.InDelta(t, p.DecodeTokS/rep.Runs[i-i%2].Points[0].DecodeTokS, r.Speedup[0], 1e-12)
		if r.Threads == 1 {
			require.Equal(t, 1.0, r.Speedup[0])
		}
	}
	require.Len(t, rep.Speedup, 1)
	require.InDelta(t, rep.Runs[0].Points[0].DecodeTokS/rep.Runs[2].Points[0].DecodeTokS, rep.Speedup[0], 1e-12)
	require.InDelta(t, float64(2*(786432*2+6144)+1024+81600+1024*18)/float64(406528+81600+1024*18), rep.Memory[0], 1e-12)
}

// TestBenchE2EFlags: bench e2e's flag errors, one line each, before anything runs.
func TestBenchE2EFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--device", "tpu"}, `--device "tpu": want gpu, cpu or cpuref`},
		{[]string{"--device", "cpu", "--threads", "0"}, "--threads 0: must be at least 1"},
		{[]string{"--device", "cpu", "--rounds", "0"}, "--rounds 0: must be at least 1"},
		{[]string{"--device", "cpu", "--plot", "."}, "--plot: plots are drawn for --device gpu only"},
		{[]string{"--threads", "1,2"}, "--threads: only with --device cpu or cpuref"},
		{[]string{"--device", "cpuref", "--ctx", "0"}, "--ctx 0 and --steps 8 must be positive"},
	} {
		out, errOut, code := runCLI(t, nil, append([]string{"bench", "e2e"}, c.args...)...)
		requireOneErrorLine(t, out, errOut, code, c.want)
	}
}
