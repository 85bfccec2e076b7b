package model

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSynthTinyOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, WriteSynthetic(path, SynthOptions{}))
	m, err := Open(path)
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, Config{
		Arch: ArchBitNetB158, VocabSize: 300, Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64, FFNDim: 768,
		RoPEBase: 10000, RoPEDim: 64, RoPEMode: RoPENeox, RMSEps: 1e-5, ContextLength: 256, Act: ActReLU2,
		TiedEmbedding: true, SubNorms: true, BOS: 297, EOS: 298, EOT: 299, AddBOS: true, ChatTemplate: SynthChatTemplate,
	}, m.Config)
	require.Len(t, m.Tensors, 24)

	tok := m.Tokenizer
	// Ids 0..255 are the bytes; merges follow in list order from 256 ("Ġ t" = 256, "h e" = 257,
	// "Ġt he" = 260, "l l" = 285, "Ġworl d" = 294); the specials are the last three ids.
	require.Equal(t, []int{257, 285, 111, 294}, tok.Encode("hello world", false))
	require.Equal(t, []int{297, 66, 299}, tok.Encode("<|begin_of_text|>B<|eot_id|>", true))
	require.Equal(t, "hello world", tok.Decode([]int{257, 285, 111, 294}))
	require.Equal(t, DetectChatFormat(m.Config.ChatTemplate), ChatBitNet)

	for name, tt := range m.Tensors {
		switch {
		case tt.Type == TypeI2_S:
			n := int(tt.Shape[0] * tt.Shape[1])
			trits, scale, err := DecodeI2S(tt.Data, n)
			require.NoError(t, err)
			checkTritStats(t, name, trits)
			base := 1 / math.Sqrt(float64(tt.Shape[0]))
			require.GreaterOrEqual(t, float64(scale), 0.75*base*(1-1e-6), name)
			require.LessOrEqual(t, float64(scale), 1.25*base, name)
		case tt.Type == TypeF32:
			w := make([]float32, tt.Shape[0])
			require.NoError(t, DecodeF32Row(tt.Data, w))
			for i, v := range w {
				if math.Abs(float64(v)-1) > 0.1 {
					t.Fatalf("%s[%d] = %g, want 1 ± 0.1", name, i, v)
				}
			}
		case name == "token_embd.weight":
			require.Equal(t, TypeF16, tt.Type)
			e := make([]float32, 256*300)
			require.NoError(t, DecodeF16Row(tt.Data, e))
			lim := math.Sqrt(3.0 / 256)
			var sum2, amax float64
			for _, v := range e {
				amax = max(amax, math.Abs(float64(v)))
				sum2 += float64(v) * float64(v)
			}
			require.LessOrEqual(t, amax, lim*1.001)
			// Uniform on ±sqrt(3/256) has variance 1/256.
			require.InEpsilon(t, 1.0/256, sum2/float64(len(e)), 0.05)
		default:
			t.Fatalf("unexpected tensor %s of type %s", name, tt.Type)
		}
	}
}

// checkTritStats requires each trit value to make up about a third of trits.
func checkTritStats(t *testing.T, name string, trits []int8) {
	var count [3]int
	for i, v := range trits {
		if v < -1 || v > 1 {
			t.Fatalf("%s: element %d is %d, not a trit", name, i, v)
		}
		count[v+1]++
	}
	for k, c := range count {
		require.InDelta(t, 1.0/3, float64(c)/float64(len(trits)), 0.03, "%s: share of trit %d", name, k-1)
	}
}

func TestSynthTypes(t *testing.T) {
	dir := t.TempDir()
	for _, typ := range []TensorType{TypeTQ2_0, TypeTQ1_0, TypeF16} {
		t.Run(typ.String(), func(t *testing.T) {
			path := filepath.Join(dir, typ.String()+".gguf")
			require.NoError(t, WriteSynthetic(path, SynthOptions{Type: typ, Layers: 1, Seed: 7}))
			m, err := Open(path)
			require.NoError(t, err)
			defer m.Close()
			require.Equal(t, 1, m.Config.Layers)
			w := m.Tensors["blk.0.ffn_down.weight"]
			require.Equal(t, typ, w.Type)
			require.Equal(t, []uint64{768, 256}, w.Shape)
			n := 768 * 256
			base := 1 / math.Sqrt(768)
			switch typ {
			case TypeTQ2_0, TypeTQ1_0:
				dec := DecodeTQ2_0
				if typ == TypeTQ1_0 {
					dec = DecodeTQ1_0
				}
				trits, scales, err := dec(w.Data, n)
				require.NoError(t, err)
				checkTritStats(t, w.Name, trits)
				require.Len(t, scales, n/256)
				distinct := map[float32]bool{}
				for _, s := range scales {
					require.GreaterOrEqual(t, float64(s), 0.74*base)
					require.LessOrEqual(t, float64(s), 1.26*base)
					distinct[s] = true
				}
				require.Len(t, distinct, 1, "one scale per tensor without BlockScales")
				path := filepath.Join(dir, typ.String()+"-blocks.gguf")
				require.NoError(t, WriteSynthetic(path, SynthOptions{Type: typ, Layers: 1, Seed: 7, BlockScales: true}))
				mb, err := Open(path)
				require.NoError(t, err)
				defer mb.Close()
				_, scales, err = dec(mb.Tensors["blk.0.ffn_down.weight"].Data, n)
				require.NoError(t, err)
				distinct = map[float32]bool{}
				for _, s := range scales {
					distinct[s] = true
				}
				require.Greater(t, len(distinct), 100, "block scales vary with BlockScales")
			case TypeF16:
				v := make([]float32, n)
				require.NoError(t, DecodeF16Row(w.Data, v))
				var s float32
				trits := make([]int8, n)
				for i, x := range v {
					if x != 0 {
						if s == 0 {
							s = float32(math.Abs(float64(x)))
						}
						require.Equal(t, s, float32(math.Abs(float64(x))), "one magnitude per tensor")
						trits[i] = int8(math.Copysign(1, float64(x)))
					}
				}
				checkTritStats(t, w.Name, trits)
				require.InEpsilon(t, base, float64(s), 0.26)
			}
		})
	}
}

func TestSynthDeterministic(t *testing.T) {
	dir := t.TempDir()
	read := func(name string, o SynthOptions) []byte {
		p := filepath.Join(dir, name)
		require.NoError(t, WriteSynthetic(p, o))
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		return b
	}
	o := SynthOptions{Vocab: 400, Dim: 128, Layers: 1, Heads: 2, KVHeads: 1, FFN: 256, Ctx: 64, Seed: 42}
	a, b := read("a", o), read("b", o)
	require.Equal(t, a, b)
	o.Seed = 43
	c := read("c", o)
	require.Equal(t, len(a), len(c))
	require.NotEqual(t, a, c)
}

func TestSynthErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		o   SynthOptions
		msg string
	}{
		{SynthOptions{Type: TypeTQ2_0, Dim: 128}, "synth: TQ2_0 weights need every input width to be a multiple of 256; dim is 128"},
		{SynthOptions{Vocab: 100}, "synth: vocab 100 is below the 259 tokens of the byte alphabet and 3 special tokens"},
		{SynthOptions{Heads: 3}, "synth: config: dim 256 is not a multiple of heads 3"},
		{SynthOptions{KVHeads: 3}, "synth: config: heads 4 is not a multiple of kv heads 3"},
		{SynthOptions{Dim: 64, Heads: 64, KVHeads: 64}, "synth: config: rope dim 1 must be even and in (0, 1]"},
		{SynthOptions{Type: TypeQ8_0}, "synth: weight type Q8_0 is not one of I2_S, TQ2_0, TQ1_0, F16"},
		{SynthOptions{Dim: 40, Heads: 2, KVHeads: 1, FFN: 64}, "synth: tensor blk.0.attn_q.weight: I2_S needs a multiple of 128 elements, found shape [40 40]"},
	} {
		err := WriteSynthetic(filepath.Join(dir, "x.gguf"), c.o)
		require.EqualError(t, err, c.msg)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries)

	// A failure while writing leaves nothing behind either.
	ro := filepath.Join(dir, "missing", "x.gguf")
	require.Error(t, WriteSynthetic(ro, SynthOptions{}))
	_, err = SynthPreset("huge")
	require.EqualError(t, err, `synth: unknown preset "huge" (want tiny or 2b4t)`)
}

func TestSynth2B4TLayout(t *testing.T) {
	o, err := SynthPreset("2b4t")
	require.NoError(t, err)
	c, err := o.Config()
	require.NoError(t, err)
	require.Equal(t, 128, c.HeadDim)
	specs := c.TensorSpecs()
	require.Len(t, specs, 332)
	var total uint64
	for _, s := range specs {
		n, err := TensorBytes(o.weightType(s.Kind), s.Shape)
		require.NoError(t, err)
		total += n
	}
	// By hand: embedding 2560*128256*2; per layer q and o 2560*2560/4+32, k and v 2560*640/4+32,
	// gate/up/down 2560*6912/4+32, norms 3*2560*4 + 6912*4; 30 layers; output_norm 2560*4.
	layer := uint64(2*(2560*2560/4+32) + 2*(2560*640/4+32) + 3*(2560*6912/4+32) + 3*2560*4 + 6912*4)
	require.Equal(t, uint64(2560*128256*2)+30*layer+2560*4, total)
	require.Equal(t, uint64(1179449920), total)
}

func TestSynthTokenizerMetadata(t *testing.T) {
	keys, meta, err := SynthTokenizerMetadata(128256)
	require.NoError(t, err)
	require.Len(t, keys, len(meta))
	toks := meta[KeyTokenizerTokens].([]string)
	merges := meta[KeyTokenizerMerges].([]string)
	types := meta[KeyTokenizerTokenType].([]int32)
	require.Len(t, toks, 128256)
	require.Len(t, types, 128256)
	require.Len(t, merges, 128256-259)
	require.Equal(t, "Ġ", toks[' '])
	require.Equal(t, "Ċ", toks['\n'])
	require.Equal(t, "A", toks['A'])
	require.Equal(t, []string{"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"}, toks[128253:])
	require.Equal(t, []int32{3, 3, 3}, types[128253:])
	require.Equal(t, int32(1), types[1000])
	// Every merge joins two earlier tokens into the token at 256 + its rank.
	index := map[string]int{}
	for i, s := range toks {
		if _, dup := index[s]; dup {
			t.Fatalf("token %q repeats", s)
		}
		index[s] = i
	}
	for r, m := range merges {
		l, rt, ok := strings.Cut(m, " ")
		li, lok := index[l]
		ri, rok := index[rt]
		if !ok || !lok || !rok || li >= 256+r || ri >= 256+r || index[l+rt] != 256+r {
			t.Fatalf("merge %d %q does not join two earlier tokens into token %d", r, m, 256+r)
		}
	}
	require.Equal(t, uint32(128253), meta[KeyTokenizerBOS])
	_, _, err = SynthTokenizerMetadata(258)
	require.Error(t, err)
}

func TestModelToGGUFRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.gguf")
	require.NoError(t, WriteSynthetic(path, SynthOptions{Layers: 1, Seed: 3}))
	m, err := Open(path)
	require.NoError(t, err)
	defer m.Close()
	g0, err := OpenGGUF(path)
	require.NoError(t, err)
	defer g0.Close()
	tk, tm, err := SynthTokenizerMetadata(300)
	require.NoError(t, err)
	g, err := ModelToGGUF(m, tk, tm)
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, WriteGGUF(&buf, g))
	orig, err := os.ReadFile(path)
	require.NoError(t, err)
	// The synthetic file additionally carries general.name; otherwise the layout is the same,
	// so the data sections (from the aligned data offset on) are byte-identical.
	p, err := ParseGGUF("re", buf.Bytes())
	require.NoError(t, err)
	require.Equal(t, orig[g0.DataOffset:], buf.Bytes()[p.DataOffset:])
	_, err = ModelToGGUF(m, []string{"x"}, map[string]any{})
	require.EqualError(t, err, `gguf: key "x" is listed but has no value`)
}
