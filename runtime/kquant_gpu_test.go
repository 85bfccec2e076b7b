//go:build cgo

package runtime

import (
	"encoding/binary"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/cpu"
	"github.com/bitgpu/bitgpu/cpuref"
	"github.com/bitgpu/bitgpu/model"
)

// randKQuant returns rows*cols/256 random Q4_K or Q6_K blocks (any bytes are a valid block) with
// their f16 scales set to small finite values, so the decoded weights are of order 0.1.
func randKQuant(rng *rand.Rand, typ model.TensorType, cols, rows int) []byte {
	bb := model.Q4_KBlockBytes
	if typ == model.TypeQ6_K {
		bb = model.Q6_KBlockBytes
	}
	data := make([]byte, rows*cols/256*bb)
	for i := range data {
		data[i] = byte(rng.IntN(256))
	}
	for b := 0; b < len(data); b += bb {
		if typ == model.TypeQ4_K {
			binary.LittleEndian.PutUint16(data[b:], model.F32ToF16(0.0005+0.001*rng.Float32()))   // d
			binary.LittleEndian.PutUint16(data[b+2:], model.F32ToF16(0.0002+0.001*rng.Float32())) // dmin
		} else {
			binary.LittleEndian.PutUint16(data[b+208:], model.F32ToF16(0.00002+0.00005*rng.Float32()))
		}
	}
	return data
}

// kquantModel writes the synthetic llama158-layout TQ2_0 model (untied output) as llama-quantize
// lays out a TQ file — token_embd Q4_K, output Q6_K — and opens it (so the GGUF reader, the
// tensor validation and the finite-scale check see the K-quant types).
func kquantModel(t *testing.T) *model.Model {
	src := synthModel(t, model.TypeTQ2_0, func(o *model.SynthOptions) { o.Family = "llama158"; o.Layers = 1 })
	g, err := model.OpenGGUF(src.Path)
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	rng := rand.New(rand.NewPCG(31, 32))
	n := 0
	for i, tt := range g.Tensors {
		typ := map[string]model.TensorType{"token_embd.weight": model.TypeQ4_K, "output.weight": model.TypeQ6_K}[tt.Name]
		if typ == 0 {
			continue
		}
		cols, rows := int(tt.Shape[0]), int(tt.Shape[1])
		g.Tensors[i] = &model.Tensor{Name: tt.Name, Type: typ, Shape: tt.Shape, Data: randKQuant(rng, typ, cols, rows)}
		n++
	}
	require.Equal(t, 2, n)
	path := filepath.Join(t.TempDir(), "tq2_0-q4k-q6k.gguf")
	require.NoError(t, model.WriteGGUFFile(path, g))
	m, err := model.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	require.Equal(t, model.TypeQ4_K, m.Tensors["token_embd.weight"].Type)
	require.Equal(t, model.TypeQ6_K, m.Tensors["output.weight"].Type)
	return m
}

// TestKQuantEmbeddingAndOutput: a TQ2_0 GGUF with llama-quantize's default Q4_K token_embd and
// Q6_K output runs on cpuref, the fast CPU backend and the GPU with bit-identical logits, with
// both LM heads (q8_0: the decoded matrix re-quantized to Q8_0; f16: converted to F16 at load).
func TestKQuantEmbeddingAndOutput(t *testing.T) {
	m := kquantModel(t)
	prompt := []int{1, 40, 41, 72, 101, 108, 108, 111}
	for _, h := range []cpuref.LMHead{cpuref.LMHeadQ8_0, cpuref.LMHeadF16} {
		t.Run(string(h), func(t *testing.T) {
			g, c := newBackendPairHead(t, m, 64, h)
			require.Equal(t, h, g.LMHead())
			requireSameForward(t, c, g, prompt, 4)
			fast, err := cpu.New(m, 64, cpu.WithLMHead(h), cpu.WithThreads(2))
			require.NoError(t, err)
			defer fast.Close()
			c.Reset()
			lc, err := c.Prefill(prompt, true)
			require.NoError(t, err)
			lf, err := fast.Prefill(prompt, true)
			require.NoError(t, err)
			requireLogitsEqual(t, lc, lf, m.Config.VocabSize, "cpu vs cpuref")
		})
	}
}
