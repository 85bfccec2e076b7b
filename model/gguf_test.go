package model

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// gb builds GGUF bytes by hand, independently of the writer, following docs/gguf.md.
type gb struct{ b []byte }

func (g *gb) u8(v uint8) *gb   { g.b = append(g.b, v); return g }
func (g *gb) u16(v uint16) *gb { g.b = binary.LittleEndian.AppendUint16(g.b, v); return g }
func (g *gb) u32(v uint32) *gb { g.b = binary.LittleEndian.AppendUint32(g.b, v); return g }
func (g *gb) u64(v uint64) *gb { g.b = binary.LittleEndian.AppendUint64(g.b, v); return g }
func (g *gb) str(s string) *gb { g.u64(uint64(len(s))); g.b = append(g.b, s...); return g }
func (g *gb) raw(p ...byte) *gb {
	g.b = append(g.b, p...)
	return g
}
func (g *gb) pad(a int) *gb {
	for len(g.b)%a != 0 {
		g.b = append(g.b, 0)
	}
	return g
}

// handGGUF returns a version-3 file with one key of every value type (including an array of
// arrays), alignment 64, and two tensors (F32 [3] and I2_S [128, 1]) whose data is known.
func handGGUF() []byte {
	g := &gb{}
	g.u32(0x46554747).u32(3).u64(2).u64(17)
	g.str("general.alignment").u32(4).u32(64)
	g.str("k.u8").u32(0).u8(200)
	g.str("k.i8").u32(1).u8(0xfe) // -2
	g.str("k.u16").u32(2).u16(65000)
	g.str("k.i16").u32(3).u16(0x8000) // -32768
	g.str("k.u32").u32(4).u32(4000000000)
	g.str("k.i32").u32(5).u32(0xffffffff) // -1
	g.str("k.f32").u32(6).u32(0x3fc00000) // 1.5
	g.str("k.bool").u32(7).u8(1)
	g.str("k.str").u32(8).str("héllo")
	g.str("k.u64").u32(10).u64(1 << 40)
	g.str("k.i64").u32(11).u64(0xfffffffffffffffd) // -3
	g.str("k.f64").u32(12).u64(0x400c000000000000) // 3.5
	g.str("k.arr.str").u32(9).u32(8).u64(2).str("a").str("")
	g.str("k.arr.f32").u32(9).u32(6).u64(2).u32(0x3f800000).u32(0xc0000000) // 1, -2
	g.str("k.arr.nested").u32(9).u32(9).u64(2).
		u32(5).u64(2).u32(7).u32(0xfffffff8). // [7, -8] int32
		u32(7).u64(1).u8(0)                   // [false]
	g.str("k.arr.empty").u32(9).u32(4).u64(0)
	// tensor infos
	g.str("t.f32").u32(1).u64(3).u32(0).u64(0)
	g.str("t.i2s").u32(2).u64(128).u64(1).u32(36).u64(64)
	g.pad(64)
	// t.f32 data: 1, 2, 3 then padding to 64
	g.u32(math.Float32bits(1)).u32(math.Float32bits(2)).u32(math.Float32bits(3)).pad(64)
	// t.i2s: 32 bytes of code 0b10 (trit +1) everywhere = 0xAA, then f32 scale 0.25, padded to 32
	for i := 0; i < 32; i++ {
		g.u8(0xAA)
	}
	g.u32(math.Float32bits(0.25))
	for i := 0; i < 28; i++ {
		g.u8(0)
	}
	g.pad(64)
	return g.b
}

func TestParseGGUFHandBuilt(t *testing.T) {
	data := handGGUF()
	g, err := ParseGGUF("hand.gguf", data)
	require.NoError(t, err)
	require.Equal(t, uint32(3), g.Version)
	require.Equal(t, uint64(64), g.Alignment)
	require.Equal(t, []string{"general.alignment", "k.u8", "k.i8", "k.u16", "k.i16", "k.u32", "k.i32", "k.f32",
		"k.bool", "k.str", "k.u64", "k.i64", "k.f64", "k.arr.str", "k.arr.f32", "k.arr.nested", "k.arr.empty"}, g.Keys)
	want := map[string]any{
		"general.alignment": uint32(64),
		"k.u8":              uint8(200),
		"k.i8":              int8(-2),
		"k.u16":             uint16(65000),
		"k.i16":             int16(-32768),
		"k.u32":             uint32(4000000000),
		"k.i32":             int32(-1),
		"k.f32":             float32(1.5),
		"k.bool":            true,
		"k.str":             "héllo",
		"k.u64":             uint64(1 << 40),
		"k.i64":             int64(-3),
		"k.f64":             float64(3.5),
		"k.arr.str":         []string{"a", ""},
		"k.arr.f32":         []float32{1, -2},
		"k.arr.nested":      []any{[]int32{7, -8}, []bool{false}},
		"k.arr.empty":       []uint32{},
	}
	require.Equal(t, want, g.Meta)

	require.Len(t, g.Tensors, 2)
	// Header: 24 + key/value bytes + infos, then padding to 64.
	require.Equal(t, uint64(0), g.DataOffset%64)
	f := g.Tensors[0]
	require.Equal(t, "t.f32", f.Name)
	require.Equal(t, TypeF32, f.Type)
	require.Equal(t, []uint64{3}, f.Shape)
	require.Equal(t, 12, len(f.Data))
	dst := make([]float32, 3)
	require.NoError(t, DecodeF32Row(f.Data, dst))
	require.Equal(t, []float32{1, 2, 3}, dst)

	q := g.Tensor("t.i2s")
	require.NotNil(t, q)
	require.Equal(t, TypeI2_S, q.Type)
	require.Equal(t, []uint64{128, 1}, q.Shape)
	require.Equal(t, 128/4+32, len(q.Data))
	require.Equal(t, g.DataOffset+64, uint64(bytesOffset(data, q.Data)))
	trits, scale, err := DecodeI2S(q.Data, 128)
	require.NoError(t, err)
	require.Equal(t, float32(0.25), scale)
	for i, v := range trits {
		require.Equalf(t, int8(1), v, "trit %d", i)
	}
	require.Nil(t, g.Tensor("nope"))
}

// bytesOffset returns where sub starts inside whole (both share a backing array).
func bytesOffset(whole, sub []byte) int {
	for i := range whole {
		if &whole[i] == &sub[0] {
			return i
		}
	}
	return -1
}

func TestGGUFRoundTripHandBuilt(t *testing.T) {
	data := handGGUF()
	g, err := ParseGGUF("hand.gguf", data)
	require.NoError(t, err)
	var out bytes.Buffer
	require.NoError(t, WriteGGUF(&out, g))
	require.Equal(t, data, out.Bytes())
}

func TestGGUFVersion2AndDefaultAlignment(t *testing.T) {
	g := &gb{}
	g.u32(0x46554747).u32(2).u64(1).u64(1)
	g.str("general.architecture").u32(8).str("bitnet")
	g.str("w").u32(2).u64(32).u64(2).u32(8).u64(0) // Q8_0 [32, 2]: 2 blocks of 34 bytes
	g.pad(32)
	for i := 0; i < 68; i++ {
		g.u8(byte(i))
	}
	g.pad(32)
	p, err := ParseGGUF("v2.gguf", g.b)
	require.NoError(t, err)
	require.Equal(t, uint32(2), p.Version)
	require.Equal(t, uint64(32), p.Alignment)
	require.Equal(t, "bitnet", p.Meta["general.architecture"])
	require.Equal(t, 68, len(p.Tensors[0].Data))
	require.Equal(t, byte(0), p.Tensors[0].Data[0])
	require.Equal(t, byte(67), p.Tensors[0].Data[67])
	var out bytes.Buffer
	require.NoError(t, WriteGGUF(&out, p))
	require.Equal(t, g.b, out.Bytes())
}

func TestTensorBytes(t *testing.T) {
	for _, c := range []struct {
		typ   TensorType
		shape []uint64
		want  uint64
	}{
		{TypeF32, []uint64{3, 5}, 60},
		{TypeF16, []uint64{7}, 14},
		{TypeBF16, []uint64{4, 2, 3}, 48},
		{TypeQ8_0, []uint64{64, 3}, 6 * 34},
		{TypeTQ1_0, []uint64{512, 2}, 4 * 54},
		{TypeTQ2_0, []uint64{256, 3}, 3 * 66},
		{TypeI2_S, []uint64{2560, 640}, 2560*640/4 + 32},
		{TypeI2_S, []uint64{128}, 64},
	} {
		got, err := TensorBytes(c.typ, c.shape)
		require.NoError(t, err, "%s %v", c.typ, c.shape)
		require.Equal(t, c.want, got, "%s %v", c.typ, c.shape)
	}
	for _, c := range []struct {
		typ   TensorType
		shape []uint64
		msg   string
	}{
		{TensorType(99), []uint64{4}, "unknown tensor type id 99"},
		{TypeQ8_0, []uint64{48, 2}, "multiple of 32"},
		{TypeTQ2_0, []uint64{128, 2}, "multiple of 256"},
		{TypeI2_S, []uint64{64, 1}, "multiple of 128"},
		{TypeF32, []uint64{}, "0 dimensions"},
		{TypeF32, []uint64{1, 1, 1, 1, 1}, "5 dimensions"},
		{TypeF32, []uint64{4, 0}, "is 0"},
		{TypeF32, []uint64{1 << 40, 1 << 40}, "2^62"},
	} {
		_, err := TensorBytes(c.typ, c.shape)
		require.ErrorContains(t, err, c.msg, "%s %v", c.typ, c.shape)
	}
}

func TestParseGGUFErrors(t *testing.T) {
	base := func() *gb { return (&gb{}).u32(0x46554747).u32(3) }
	for _, c := range []struct {
		name string
		data []byte
		msg  []string
	}{
		{"magic", (&gb{}).raw('G', 'G', 'M', 'L', 3, 0, 0, 0).b, []string{"not a GGUF file", "byte 0"}},
		{"v1", (&gb{}).u32(0x46554747).u32(1).u64(0).u64(0).b, []string{"version 1", "byte 4"}},
		{"bigendian", (&gb{}).u32(0x46554747).u32(0x03000000).u64(0).u64(0).b, []string{"big-endian"}},
		{"v9", (&gb{}).u32(0x46554747).u32(9).u64(0).u64(0).b, []string{"unsupported GGUF version 9"}},
		{"kvcount", base().u64(0).u64(1 << 60).b, []string{"metadata count", "byte 24"}},
		{"tcount", base().u64(1 << 60).u64(0).b, []string{"tensor count", "byte 24"}},
		{"keylen", base().u64(0).u64(1).u64(1 << 50).u32(0).u8(0).b, []string{"string length 1125899906842624", "byte 24"}},
		{"badtype", base().u64(0).u64(1).str("a").u32(13).u8(0).b, []string{`key "a"`, "unknown value type 13", "byte 33"}},
		{"badelem", base().u64(0).u64(1).str("a").u32(9).u32(42).u64(0).b, []string{`key "a"`, "element type 42"}},
		{"arraylen", base().u64(0).u64(1).str("a").u32(9).u32(4).u64(1 << 40).b, []string{`key "a"`, "array length 1099511627776", "byte 41"}},
		{"strarraylen", base().u64(0).u64(1).str("a").u32(9).u32(8).u64(3).u64(0).u64(0).b, []string{`key "a"`, "array length 3"}},
		{"bool", base().u64(0).u64(1).str("a").u32(7).u8(2).b, []string{`key "a"`, "bool byte 2", "byte 37"}},
		{"dupkey", base().u64(0).u64(2).str("a").u32(0).u8(1).str("a").u32(0).u8(1).b, []string{`duplicate metadata key "a"`, "byte 38"}},
		{"align", base().u64(0).u64(1).str("general.alignment").u32(4).u32(48).b, []string{"general.alignment", "power of two"}},
		{"aligntype", base().u64(0).u64(1).str("general.alignment").u32(10).u64(32).b, []string{"general.alignment", "uint64"}},
		{"ndims", base().u64(1).u64(0).str("t").u32(5).u64(1).u64(1).u64(1).u64(1).u64(1).u32(0).u64(0).b, []string{`tensor "t"`, "5 dimensions", "byte 33"}},
		{"ttype", base().u64(1).u64(0).str("w.weight").u32(1).u64(4).u32(77).u64(0).pad(32).b, []string{`tensor "w.weight"`, "unknown tensor type id 77", "byte 52"}},
		{"tshape", base().u64(1).u64(0).str("w").u32(1).u64(100).u32(35).u64(0).pad(32).b, []string{`tensor "w"`, "multiple of 256"}},
		{"tmisaligned", base().u64(1).u64(0).str("w").u32(1).u64(4).u32(0).u64(8).pad(32).b, []string{`tensor "w"`, "offset 8", "alignment 32"}},
		{"tpastend", base().u64(1).u64(0).str("w").u32(1).u64(4).u32(0).u64(0).pad(32).u32(0).b, []string{`tensor "w"`, "16 bytes", "past the end", "at byte 64"}},
		{"tdup", base().u64(2).u64(0).str("w").u32(1).u64(8).u32(0).u64(0).str("w").u32(1).u64(8).u32(0).u64(32).pad(32).b, []string{`duplicate tensor name "w"`}},
		{"nested", deepArray(ggufMaxDepth + 1), []string{"nested deeper"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseGGUF("bad.gguf", c.data)
			require.Error(t, err)
			require.Contains(t, err.Error(), "bad.gguf")
			for _, m := range c.msg {
				require.Contains(t, err.Error(), m)
			}
		})
	}
}

// deepArray builds a file whose only key holds arrays nested depth deep.
func deepArray(depth int) []byte {
	g := (&gb{}).u32(0x46554747).u32(3).u64(0).u64(1).str("a").u32(9)
	for i := 0; i < depth; i++ {
		g.u32(9).u64(1)
	}
	g.u32(0).u64(0)
	return g.b
}

// TestParseGGUFTruncated cuts a valid file at every length: each prefix must fail with an error
// that names the file and a byte offset, never panic.
func TestParseGGUFTruncated(t *testing.T) {
	data := handGGUF()
	g, err := ParseGGUF("x", data)
	require.NoError(t, err)
	end := int(g.DataOffset) + 64 + 64 // last tensor's data ends inside the final 64 bytes
	for n := 0; n < end; n++ {
		_, err := ParseGGUF("cut.gguf", data[:n])
		require.Errorf(t, err, "prefix of %d bytes", n)
		require.Containsf(t, err.Error(), "cut.gguf", "prefix %d", n)
		require.Containsf(t, err.Error(), "byte ", "prefix %d: %v", n, err)
	}
}

func TestOpenGGUFFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hand.gguf")
	data := handGGUF()
	require.NoError(t, os.WriteFile(path, data, 0o644))
	g, err := OpenGGUF(path)
	require.NoError(t, err)
	require.Equal(t, path, g.Path)
	require.Equal(t, data[g.DataOffset:g.DataOffset+12], g.Tensors[0].Data)
	require.NoError(t, g.Close())
	require.NoError(t, g.Close())

	empty := filepath.Join(dir, "empty.gguf")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	_, err = OpenGGUF(empty)
	require.ErrorContains(t, err, "empty.gguf")
	require.ErrorContains(t, err, "byte 0")

	_, err = OpenGGUF(dir)
	require.ErrorContains(t, err, "is a directory")
}

func TestWriteGGUFAllTypes(t *testing.T) {
	// One tensor of each type with distinctive bytes; written, re-read, written again.
	g := &GGUF{Version: 3}
	g.Set("general.architecture", "test")
	g.Set("x", []any{[]any{[]string{"deep"}}, []uint64{1, 2}})
	for i, c := range []struct {
		typ   TensorType
		shape []uint64
	}{
		{TypeF32, []uint64{5}}, {TypeF16, []uint64{3, 3}}, {TypeBF16, []uint64{9}}, {TypeQ8_0, []uint64{32, 2}},
		{TypeTQ1_0, []uint64{256}}, {TypeTQ2_0, []uint64{256, 2}}, {TypeI2_S, []uint64{128, 3}},
	} {
		size, err := TensorBytes(c.typ, c.shape)
		require.NoError(t, err)
		d := make([]byte, size)
		for j := range d {
			d[j] = byte(i*31 + j)
		}
		g.Tensors = append(g.Tensors, &Tensor{Name: c.typ.String(), Type: c.typ, Shape: c.shape, Data: d})
	}
	var a bytes.Buffer
	require.NoError(t, WriteGGUF(&a, g))
	p, err := ParseGGUF("a", a.Bytes())
	require.NoError(t, err)
	require.Equal(t, g.Keys, p.Keys)
	require.Equal(t, g.Meta, p.Meta)
	require.Len(t, p.Tensors, 7)
	var off uint64
	for i, tt := range p.Tensors {
		require.Equal(t, g.Tensors[i].Name, tt.Name)
		require.Equal(t, g.Tensors[i].Type, tt.Type)
		require.Equal(t, g.Tensors[i].Shape, tt.Shape)
		require.Equal(t, g.Tensors[i].Data, tt.Data)
		require.Equal(t, off, p.Offsets[i])
		off += (uint64(len(tt.Data)) + 31) / 32 * 32
	}
	require.Equal(t, int(p.DataOffset+off), a.Len())
	var b bytes.Buffer
	require.NoError(t, WriteGGUF(&b, p))
	require.Equal(t, a.Bytes(), b.Bytes())
}

func TestWriteGGUFErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		g    *GGUF
		msg  string
	}{
		{"int", &GGUF{Keys: []string{"k"}, Meta: map[string]any{"k": 5}}, `key "k": unsupported metadata value type int`},
		{"ints", &GGUF{Keys: []string{"k"}, Meta: map[string]any{"k": []int{5}}}, `key "k": unsupported metadata value type []int`},
		{"nested", &GGUF{Keys: []string{"k"}, Meta: map[string]any{"k": []any{uint8(1)}}}, `key "k": element 0 of a nested array is uint8`},
		{"missing", &GGUF{Keys: []string{"k", "j"}, Meta: map[string]any{"k": "v", "x": "y"}}, `key "j" is listed but has no value`},
		{"count", &GGUF{Keys: []string{"k"}, Meta: map[string]any{}}, "1 metadata keys listed for 0 values"},
		{"align", &GGUF{Keys: []string{"general.alignment"}, Meta: map[string]any{"general.alignment": uint32(3)}}, "power of two"},
		{"size", &GGUF{Tensors: []*Tensor{{Name: "w", Type: TypeF32, Shape: []uint64{4}, Data: make([]byte, 15)}}}, `tensor "w": F32 [4] needs 16 bytes, got 15`},
		{"type", &GGUF{Tensors: []*Tensor{{Name: "w", Type: 50, Shape: []uint64{4}}}}, `tensor "w": unknown tensor type id 50`},
		{"dup", &GGUF{Tensors: []*Tensor{{Name: "w", Type: TypeF32, Shape: []uint64{1}}, {Name: "w", Type: TypeF32, Shape: []uint64{1}}}}, `duplicate tensor name "w"`},
		{"version", &GGUF{Version: 1}, "version 1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := WriteGGUF(&bytes.Buffer{}, c.g)
			require.ErrorContains(t, err, c.msg)
		})
	}
}

func TestGGUFEncoderStreaming(t *testing.T) {
	infos := []TensorInfo{{"a", TypeF32, []uint64{3}}, {"b", TypeF16, []uint64{2}}}
	var buf bytes.Buffer
	e, err := NewGGUFEncoder(&buf, 3, nil, map[string]any{}, infos)
	require.NoError(t, err)
	// 12 + 4 bytes in uneven pieces that straddle the tensor boundary.
	for _, p := range [][]byte{{1, 2, 3, 4, 5}, {6, 7, 8, 9, 10, 11, 12, 13}, {14, 15, 16}} {
		_, err := e.Write(p)
		require.NoError(t, err)
	}
	_, err = e.Write([]byte{17})
	require.ErrorContains(t, err, "beyond the last tensor")

	// Expected layout by hand: header 24 + 2 infos (8+1+4+8+4+8 = 33 each) = 90 → pad to 96.
	h := (&gb{}).u32(0x46554747).u32(3).u64(2).u64(0).
		str("a").u32(1).u64(3).u32(0).u64(0).
		str("b").u32(1).u64(2).u32(1).u64(32).pad(32).
		raw(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12).pad(32).raw(13, 14, 15, 16).pad(32)
	var buf2 bytes.Buffer
	e2, err := NewGGUFEncoder(&buf2, 3, nil, map[string]any{}, infos)
	require.NoError(t, err)
	require.ErrorContains(t, e2.WriteTensor("b", make([]byte, 4)), `tensor "b" written where "a" comes next`)
	require.NoError(t, e2.WriteTensor("a", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}))
	require.ErrorContains(t, e2.Close(), `tensor "b": 4 of 4 bytes missing`)
	require.NoError(t, e2.WriteTensor("b", []byte{13, 14, 15, 16}))
	require.NoError(t, e2.Close())
	require.Equal(t, h.b, buf2.Bytes())
	_ = e
}

func TestWriteGGUFFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.gguf")
	bad := &GGUF{Tensors: []*Tensor{{Name: "w", Type: TypeF32, Shape: []uint64{4}, Data: make([]byte, 3)}}}
	require.Error(t, WriteGGUFFile(path, bad))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing may remain after a failed write")

	good := &GGUF{Tensors: []*Tensor{{Name: "w", Type: TypeF32, Shape: []uint64{1}, Data: []byte{0, 0, 128, 63}}}}
	require.NoError(t, WriteGGUFFile(path, good))
	g, err := OpenGGUF(path)
	require.NoError(t, err)
	defer g.Close()
	require.Equal(t, []byte{0, 0, 128, 63}, g.Tensors[0].Data)
	entries, _ = os.ReadDir(dir)
	require.Len(t, entries, 1)
	require.False(t, strings.Contains(entries[0].Name(), "tmp"))
}

// FuzzParseGGUF checks that no input makes the parser panic or allocate from an unchecked count,
// and that whatever parses writes back to a file that parses to the same metadata and tensors.
func FuzzParseGGUF(f *testing.F) {
	f.Add(handGGUF())
	f.Add(deepArray(3))
	f.Add((&gb{}).u32(0x46554747).u32(2).u64(0).u64(0).b)
	f.Add((&gb{}).u32(0x46554747).u32(3).u64(1).u64(0).str("w").u32(2).u64(256).u64(1).u32(35).u64(0).pad(32).raw(make([]byte, 66)...).b)
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseGGUF("fuzz", data)
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WriteGGUF(&out, g); err != nil {
			t.Fatalf("parsed file does not write back: %v", err)
		}
		p, err := ParseGGUF("again", out.Bytes())
		if err != nil {
			t.Fatalf("written file does not parse: %v", err)
		}
		require.Equal(t, len(g.Tensors), len(p.Tensors))
		for i := range g.Tensors {
			require.Equal(t, g.Tensors[i].Data, p.Tensors[i].Data)
		}
	})
}
