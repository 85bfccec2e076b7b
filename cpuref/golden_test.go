package cpuref_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// The golden logits in ../testdata/golden_logits.json come from scripts/reference.py, an
// independent float64 forward pass written from the BitNet b1.58 equations with PyTorch. It is run
// by hand, never by CI (the file's "comment" holds the exact command):
//
//	go run ./cmd/bitgpu synth -o /tmp/golden.gguf --vocab 300 --dim 128 --layers 2 --heads 4 \
//	    --kv-heads 2 --ffn 256 --ctx 64 --seed 7
//	/usr/bin/python3 scripts/reference.py /tmp/golden.gguf testdata/golden_logits.json \
//	    --synth-args "--vocab 300 --dim 128 --layers 2 --heads 4 --kv-heads 2 --ffn 256 --ctx 64 --seed 7"
//
// goldenSynth is that synth command as SynthOptions; the test regenerates the file and checks its
// SHA-256 against the golden's, so a change in model.WriteSynthetic is caught (regenerate then).
var goldenSynth = model.SynthOptions{Vocab: 300, Dim: 128, Layers: 2, Heads: 4, KVHeads: 2, FFN: 256, Ctx: 64,
	RoPEBase: 10000, RMSEps: 1e-5, Type: model.TypeI2_S, Seed: 7}

// goldenZ is the number of standard deviations of float32 rounding noise the comparison allows.
const goldenZ = 6

// golden is the JSON file scripts/reference.py writes.
type golden struct {
	Comment            string      `json:"comment"`
	GGUFSHA256         string      `json:"gguf_sha256"`
	Vocab              int         `json:"vocab"`
	Prompt             []int       `json:"prompt"`
	Samples            int         `json:"samples"`
	ZSite              float64     `json:"z_site"`
	Int8Roundings      int         `json:"int8_roundings"`
	F16Roundings       int         `json:"f16_roundings"`
	MinInt8MarginSigma float64     `json:"min_int8_margin_sigma"`
	AmbiguousF16       int         `json:"ambiguous_f16_roundings"`
	Logits             [][]float64 `json:"logits"`
	Sigma              [][]float64 `json:"sigma"`
	FlipAllowance      [][]float64 `json:"flip_allowance"`
}

// TestGoldenLogits compares cpuref's logits for every position of the golden prompt with the
// float64 reference. The tolerance per logit is
//
//	|cpuref - reference| <= goldenZ * sigma + flip_allowance
//
// derived as follows (the reference script computes sigma and flip_allowance; its docstring has
// the details):
//
//   - f32 versus f64 arithmetic. cpuref computes in float32 (u = 2^-24), the reference in float64
//     (taken as exact). The integer parts agree exactly (trit sums are exact int32 in cpuref and
//     exact in float64) as long as every int8 activation rounds the same way. The float32 error of
//     everything else is modelled as in Monte Carlo arithmetic: every operation's result carries
//     an independent relative error uniform in [-u, u], sums accumulate sequentially. sigma is the
//     standard deviation of the logits over 256 such perturbed forwards. A worst-case bound
//     (Higham's gamma_n) is not usable here: it assumes all errors aligned and exceeds the actual
//     error about 1000-fold, which would make every int8 rounding ambiguous. With goldenZ = 6 a
//     Gaussian error exceeds the allowance with probability 2e-9 per logit, 4e-6 over the 1800.
//   - int8 rounding of the activations. The prompt was chosen so that every one of the 12288
//     int8 rounding inputs lies at least z_site = 6 sigmas of its own float32 noise from its
//     rounding boundary (x.5); so cpuref rounds each the same way as the reference (failure
//     probability about 2e-9 per input).
//   - f16 rounding of the KV cache. Both round K and V to f16, so an element rounds identically
//     unless its value is within its float32 noise of an f16 rounding boundary (the midpoint
//     between two f16 neighbours, 2^-11 relative apart). No prompt avoids that for all 1536 K/V
//     elements, so the reference lists the ones within 6 sigma (8 here), reruns the forward with
//     each rounded the other way (one f16 ulp, 2^-10 relative) and with all of them rounded the
//     other way, and adds flip_allowance = sum_f |D_f| + |D_all - sum_f D_f|, which covers any
//     of them flipping alone or together (to first order in their interaction).
//
// Logits are O(1) (|logit| <= 3.3) and the resulting tolerances are below 2e-5, while a wrong
// equation moves some logits by far more; measured on this golden by changing the reference:
// GQA head h reading KV head h % n_kv 3.6, adjacent RoPE pairs 0.88, no attention sub-norm 1.1,
// reversed I2_S bit order 4.4, K not rounded to f16 0.061, eps 1e-6 instead of 1e-5 0.064.
func TestGoldenLogits(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "golden_logits.json"))
	require.NoError(t, err)
	var g golden
	require.NoError(t, json.Unmarshal(raw, &g))
	require.GreaterOrEqual(t, g.Samples, 256, "sigma needs enough Monte Carlo samples")
	require.GreaterOrEqual(t, g.ZSite, float64(goldenZ), "rounding sites must be at least goldenZ sigma from a boundary")
	require.GreaterOrEqual(t, g.MinInt8MarginSigma, g.ZSite)

	path := filepath.Join(t.TempDir(), "golden.gguf")
	require.NoError(t, model.WriteSynthetic(path, goldenSynth))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	require.Equal(t, g.GGUFSHA256, hex.EncodeToString(sum[:]),
		"model.WriteSynthetic no longer writes the golden model; regenerate the goldens: %s", g.Comment)

	m, err := model.Open(path)
	require.NoError(t, err)
	defer m.Close()
	// The goldens are PyTorch's F16-embedding logits: the f16 head is the one they check.
	b, err := cpuref.New(m, 0, cpuref.WithLMHead(cpuref.LMHeadF16))
	require.NoError(t, err)
	defer b.Close()
	logits, err := b.Prefill(g.Prompt, true)
	require.NoError(t, err)
	require.Len(t, g.Logits, len(g.Prompt))
	require.Len(t, logits, len(g.Prompt)*g.Vocab)

	worst, worstRatio := 0.0, 0.0
	for p := range g.Prompt {
		require.Len(t, g.Logits[p], g.Vocab)
		for v := range g.Vocab {
			got, want := float64(logits[p*g.Vocab+v]), g.Logits[p][v]
			tol := goldenZ*g.Sigma[p][v] + g.FlipAllowance[p][v]
			require.Greater(t, tol, 0.0)
			require.Less(t, tol, 1e-3, "position %d token %d: the tolerance must stay far below a wrong equation's effect", p, v)
			d := math.Abs(got - want)
			require.LessOrEqual(t, d, tol, "position %d token %d: cpuref %v, reference %v (sigma %g, flip allowance %g)",
				p, v, got, want, g.Sigma[p][v], g.FlipAllowance[p][v])
			worst = max(worst, d)
			worstRatio = max(worstRatio, d/tol)
		}
	}
	t.Logf("largest |cpuref - reference| %.3g; largest fraction of its tolerance %.3g", worst, worstRatio)
}
