package model

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// synthGGUF writes a tiny synthetic model of opt and returns it parsed (tensors copied out of
// the mapping, so edits do not touch the file).
func synthGGUF(t *testing.T, opt SynthOptions) *GGUF {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, WriteSynthetic(path, opt))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	g, err := ParseGGUF(path, data)
	require.NoError(t, err)
	return g
}

// openEdited writes g to a new file and opens it with Open.
func openEdited(t *testing.T, g *GGUF) (*Model, error) {
	path := filepath.Join(t.TempDir(), "edited.gguf")
	require.NoError(t, WriteGGUFFile(path, g))
	m, err := Open(path)
	if err == nil {
		t.Cleanup(func() { m.Close() })
	}
	return m, err
}

// ownTensor returns g's tensor name with a private copy of its data.
func ownTensor(t *testing.T, g *GGUF, name string) *Tensor {
	for _, tt := range g.Tensors {
		if tt.Name == name {
			tt.Data = append([]byte(nil), tt.Data...)
			return tt
		}
	}
	t.Fatalf("no tensor %s", name)
	return nil
}

// A declared layer count the file cannot hold fails at once with the key named, before any
// per-layer list is built (2^31-1 layers used to grow the process past 8 GB).
func TestOpenGGUFHugeCounts(t *testing.T) {
	for _, c := range []struct {
		key string
		v   uint32
		msg string
	}{
		{"bitnet-b1.58.block_count", 1000000, "metadata key bitnet-b1.58.block_count = 1000000: the file has only 24 tensors"},
		{"bitnet-b1.58.block_count", math.MaxInt32, "metadata key bitnet-b1.58.block_count = 2147483647: the file has only 24 tensors"},
		{"bitnet-b1.58.feed_forward_length", math.MaxInt32, "metadata key bitnet-b1.58.feed_forward_length = 2147483647: larger than the largest tensor in the file"},
		{"bitnet-b1.58.rope.dimension_count", 0, "metadata key bitnet-b1.58.rope.dimension_count = 0: expected a positive even number"},
	} {
		g := synthGGUF(t, SynthOptions{})
		g.Meta[c.key] = c.v
		_, err := openEdited(t, g)
		require.ErrorContains(t, err, c.msg)
	}
}

// The same bound for a Hugging Face checkpoint's config.json.
func TestOpenHFHugeLayerCount(t *testing.T) {
	for _, layers := range []int{1000000, math.MaxInt32, 1 << 40} {
		dir := t.TempDir()
		writeHFTestModel(t, dir, false)
		p := filepath.Join(dir, "config.json")
		var cfg map[string]any
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &cfg))
		cfg["num_hidden_layers"] = layers
		b, _ = json.Marshal(cfg)
		require.NoError(t, os.WriteFile(p, b, 0o644))
		_, err = Open(dir)
		require.ErrorContains(t, err, "config.json: num_hidden_layers = ")
		require.ErrorContains(t, err, ": the checkpoint has only 24 tensors")
	}
}

// NaN and Inf in any float a backend reads are refused at load, naming the tensor and the element
// or block (an Inf norm used to give NaN logits on the CPU and text on the GPU).
func TestOpenGGUFNonFinite(t *testing.T) {
	f16Inf := func(p []byte) { binary.LittleEndian.PutUint16(p, 0x7C00) }
	f16NaN := func(p []byte) { binary.LittleEndian.PutUint16(p, 0xFE01) }
	f32 := func(v float32) func(p []byte) {
		return func(p []byte) { binary.LittleEndian.PutUint32(p, math.Float32bits(v)) }
	}
	for _, c := range []struct {
		name   string
		typ    TensorType
		tensor string
		off    int
		set    func(p []byte)
		msg    string
	}{
		{"norm Inf", TypeI2_S, "blk.1.ffn_norm.weight", 4 * 7, f32(float32(math.Inf(1))), "tensor blk.1.ffn_norm.weight: element 7 is +Inf"},
		{"norm NaN", TypeI2_S, "output_norm.weight", 4 * 255, f32(float32(math.NaN())), "tensor output_norm.weight: element 255 is NaN"},
		{"embedding Inf", TypeI2_S, "token_embd.weight", 2 * 1001, f16Inf, "tensor token_embd.weight: element 1001 is +Inf"},
		{"embedding NaN", TypeI2_S, "token_embd.weight", 2 * (300*256 - 1), f16NaN, "tensor token_embd.weight: element 76799 is NaN"},
		{"I2_S scale", TypeI2_S, "blk.0.attn_k.weight", 256 * 128 / 4, f32(float32(math.NaN())), "tensor blk.0.attn_k.weight: I2_S scale is NaN"},
		{"TQ2_0 scale", TypeTQ2_0, "blk.0.ffn_up.weight", 3*TQ2_0BlockBytes + 64, f16Inf, "tensor blk.0.ffn_up.weight: the scale of block 3 (elements 768 to 1023) is +Inf"},
		{"TQ1_0 scale", TypeTQ1_0, "blk.1.attn_q.weight", 52, f16NaN, "tensor blk.1.attn_q.weight: the scale of block 0 (elements 0 to 255) is NaN"},
		{"F16 projection", TypeF16, "blk.0.ffn_down.weight", 2 * 5, f16Inf, "tensor blk.0.ffn_down.weight: element 5 is +Inf"},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := synthGGUF(t, SynthOptions{Type: c.typ})
			c.set(ownTensor(t, g, c.tensor).Data[c.off:])
			_, err := openEdited(t, g)
			require.ErrorContains(t, err, c.msg)
		})
	}
}

// A `bitnet`-arch `*.scale` tensor, a BF16 norm and a Q8_0 embedding are checked too.
func TestCheckFiniteTypes(t *testing.T) {
	bf := func(bits ...uint16) []byte {
		var b []byte
		for _, v := range bits {
			b = binary.LittleEndian.AppendUint16(b, v)
		}
		return b
	}
	q8 := make([]byte, 2*34)
	binary.LittleEndian.PutUint16(q8[34:], 0xFC00)
	for _, c := range []struct {
		t   *Tensor
		msg string
	}{
		{&Tensor{Name: "blk.0.attn_q.scale", Type: TypeF32, Shape: []uint64{1}, Data: binary.LittleEndian.AppendUint32(nil, 0xFF800000)},
			"tensor blk.0.attn_q.scale: element 0 is -Inf"},
		{&Tensor{Name: "n", Type: TypeBF16, Shape: []uint64{6}, Data: bf(0x3F80, 0x7F7F, 0, 0x8000, 0x7FC0, 1)},
			"tensor n: element 4 is NaN"},
		{&Tensor{Name: "e", Type: TypeQ8_0, Shape: []uint64{32, 2}, Data: q8}, "tensor e: the scale of block 1 (elements 32 to 63) is -Inf"},
	} {
		require.EqualError(t, CheckFinite(map[string]*Tensor{c.t.Name: c.t}), c.msg+"; weights must be finite")
	}
	// Finite extremes pass: the largest f16 and bf16, subnormals, negative zero.
	ok := &Tensor{Name: "ok", Type: TypeF16, Shape: []uint64{8}, Data: bf(0x7BFF, 0xFBFF, 1, 0x8000, 0x3C00, 0x03FF, 0, 0x7BFF)}
	require.NoError(t, CheckFinite(map[string]*Tensor{"ok": ok}))
}

// The word-at-a-time scans find the first non-finite value at every position and alignment.
func TestFirstNonFinite(t *testing.T) {
	for _, mask := range []uint16{0x7C00, 0x7F80} {
		for n := 0; n <= 19; n++ {
			for at := -1; at < n; at++ {
				for _, bad := range []uint16{mask, mask | 0x8000, mask | 1, 0xFFFF} {
					data := make([]byte, 2*n+1) // an odd trailing byte is ignored
					for i := 0; i < n; i++ {
						binary.LittleEndian.PutUint16(data[2*i:], mask-1) // finite, all but one exponent bit
					}
					if at >= 0 {
						binary.LittleEndian.PutUint16(data[2*at:], bad)
					}
					require.Equal(t, at, firstNonFinite16(data, mask), "mask %#x n %d at %d", mask, n, at)
				}
			}
		}
	}
	for n := 0; n <= 9; n++ {
		for at := -1; at < n; at++ {
			data := make([]byte, 4*n)
			for i := 0; i < n; i++ {
				binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(-math.MaxFloat32))
			}
			if at >= 0 {
				binary.LittleEndian.PutUint32(data[4*at:], 0x7FC00000)
			}
			require.Equal(t, at, firstNonFinite32(data))
		}
	}
}

// convert writes nothing non-finite: a NaN in a latent weight is an error naming the checkpoint
// tensor and element.
func TestConvertHFRefusesNonFinite(t *testing.T) {
	dir := t.TempDir()
	writeHFTestModel(t, dir, false)
	p := filepath.Join(dir, "model.safetensors")
	st, err := OpenSafetensors(p)
	require.NoError(t, err)
	var entries []stEntry
	for n, tt := range st.Tensors {
		data := append([]byte(nil), tt.Data...)
		if n == "model.layers.1.mlp.gate_proj.weight" {
			binary.LittleEndian.PutUint16(data[2*9:], 0x7FC0) // bf16 NaN
		}
		entries = append(entries, stEntry{n, tt.DType, tt.Shape, data})
	}
	require.NoError(t, st.Close())
	require.NoError(t, os.WriteFile(p, buildST(entries), 0o644))
	out := filepath.Join(t.TempDir(), "out.gguf")
	err = ConvertHF(dir, out, TypeI2_S)
	require.ErrorContains(t, err, "tensor model.layers.1.mlp.gate_proj.weight: element 9 is NaN")
	require.NoFileExists(t, out)
}

// max_position_embeddings above MaxContextLength is refused, not copied into the GGUF.
func TestConvertHFRefusesHugeContext(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "out.gguf")
	writeHFTestModel(t, dir, true)
	cp := filepath.Join(dir, "config.json")
	var cfg map[string]any
	b, err := os.ReadFile(cp)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &cfg))
	cfg["max_position_embeddings"] = math.MaxInt32
	b, _ = json.Marshal(cfg)
	require.NoError(t, os.WriteFile(cp, b, 0o644))
	err = ConvertHF(dir, out, TypeI2_S)
	require.ErrorContains(t, err, "config.json: max_position_embeddings = 2147483647: above the 16777216 tokens")
	require.NoFileExists(t, out)
}

// BenchmarkCheckFiniteEmbedding2B4T scans an F16 embedding of BitNet b1.58 2B4T's shape
// (128256 x 2560, 656 MB) for Inf and NaN, as Open does.
func BenchmarkCheckFiniteEmbedding2B4T(b *testing.B) {
	const vocab, dim = 128256, 2560
	data := make([]byte, 2*vocab*dim)
	for i := 0; i < len(data); i += 2 {
		binary.LittleEndian.PutUint16(data[i:], uint16(i*2654435761>>7)&0xBBFF) // finite f16
	}
	ts := map[string]*Tensor{"token_embd.weight": {Name: "token_embd.weight", Type: TypeF16, Shape: []uint64{dim, vocab}, Data: data}}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		if err := CheckFinite(ts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckFiniteTQ2_0Scales2B4T reads the block scales of 2B4T-sized TQ2_0 projections
// (30 layers, 2.1e9 weights, 8.2e6 blocks, 545 MB).
func BenchmarkCheckFiniteTQ2_0Scales2B4T(b *testing.B) {
	const elems = 30 * (2560*2560*2 + 2560*640*2 + 3*2560*6912)
	data := make([]byte, elems/TQBlockElems*TQ2_0BlockBytes)
	ts := map[string]*Tensor{"w": {Name: "w", Type: TypeTQ2_0, Shape: []uint64{2560, elems / 2560}, Data: data}}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		if err := CheckFinite(ts); err != nil {
			b.Fatal(err)
		}
	}
}
