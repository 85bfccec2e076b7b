package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/bitgpu/bitgpu/internal/fsutil"
)

// GGUF container facts (ggml docs/gguf.md, "GGUF" specification in the ggml repository; llama.cpp
// ggml/src/gguf.cpp for the checks a reader applies).
const (
	// GGUFMagic is the first four bytes of every GGUF file, "GGUF", read as a little-endian uint32.
	GGUFMagic uint32 = 0x46554747
	// GGUFDefaultAlignment is the data alignment in bytes when `general.alignment` is absent.
	GGUFDefaultAlignment = 32
	// GGUFAlignmentKey is the metadata key (uint32) that overrides the data alignment.
	GGUFAlignmentKey = "general.alignment"
	// ggufMaxDims is GGML_MAX_DIMS: a tensor has 1 to 4 dimensions.
	ggufMaxDims = 4
	// ggufMaxDepth bounds how deeply arrays may nest inside arrays.
	ggufMaxDepth = 16
)

// GGUF metadata value type ids (gguf.md `enum gguf_metadata_value_type`).
const (
	ggufTypeUint8   uint32 = 0
	ggufTypeInt8    uint32 = 1
	ggufTypeUint16  uint32 = 2
	ggufTypeInt16   uint32 = 3
	ggufTypeUint32  uint32 = 4
	ggufTypeInt32   uint32 = 5
	ggufTypeFloat32 uint32 = 6
	ggufTypeBool    uint32 = 7
	ggufTypeString  uint32 = 8
	ggufTypeArray   uint32 = 9
	ggufTypeUint64  uint32 = 10
	ggufTypeInt64   uint32 = 11
	ggufTypeFloat64 uint32 = 12
)

// ggufScalarSize is the encoded size in bytes of the fixed-size value types (0 for string and
// array, whose size depends on their contents).
var ggufScalarSize = [...]uint64{
	ggufTypeUint8: 1, ggufTypeInt8: 1, ggufTypeUint16: 2, ggufTypeInt16: 2,
	ggufTypeUint32: 4, ggufTypeInt32: 4, ggufTypeFloat32: 4, ggufTypeBool: 1,
	ggufTypeString: 0, ggufTypeArray: 0,
	ggufTypeUint64: 8, ggufTypeInt64: 8, ggufTypeFloat64: 8,
}

// ggufMinValueSize is the smallest number of bytes a value of the type can take: a string is at
// least its 8-byte length, an array its 4-byte element type and 8-byte count.
func ggufMinValueSize(typ uint32) uint64 {
	switch typ {
	case ggufTypeString:
		return 8
	case ggufTypeArray:
		return 12
	}
	return ggufScalarSize[typ]
}

// String returns the ggml name of the type ("F32", "I2_S", ...) or "type(N)" for an id bitgpu
// does not know.
func (t TensorType) String() string {
	switch t {
	case TypeF32:
		return "F32"
	case TypeF16:
		return "F16"
	case TypeBF16:
		return "BF16"
	case TypeQ8_0:
		return "Q8_0"
	case TypeQ4_K:
		return "Q4_K"
	case TypeQ6_K:
		return "Q6_K"
	case TypeTQ1_0:
		return "TQ1_0"
	case TypeTQ2_0:
		return "TQ2_0"
	case TypeI2_S:
		return "I2_S"
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// knownType reports whether bitgpu can size tensors of type t.
func knownType(t TensorType) bool {
	switch t {
	case TypeF32, TypeF16, TypeBF16, TypeQ8_0, TypeTQ1_0, TypeTQ2_0, TypeI2_S, TypeQ4_K, TypeQ6_K:
		return true
	}
	return false
}

// typeBlockElems is the number of elements of one block of t along the innermost dimension
// (1 for element types and for I2_S, whose 128-element blocks run over the flattened tensor).
func typeBlockElems(t TensorType) uint64 {
	switch t {
	case TypeQ8_0:
		return Q8_0BlockElems
	case TypeTQ1_0, TypeTQ2_0:
		return TQBlockElems
	case TypeQ4_K, TypeQ6_K:
		return KBlockElems
	}
	return 1
}

// TensorBytes returns the number of bytes a tensor of type typ and GGUF shape (Shape[0]
// innermost, 1 to 4 dimensions, each at least 1) takes on disk: 4 per element for F32, 2 for F16
// and BF16, 34 per 32-element block for Q8_0, 54 per 256-element block for TQ1_0, 66 for TQ2_0,
// and n/4 + 32 for I2_S (n elements, a multiple of 128; the 32 bytes hold the f32 scale and its
// padding, as microsoft/BitNet's ggml_nbytes counts them). Block types need Shape[0] to be a
// multiple of the block length (ggml's rule). It returns an error for an unknown type, a bad shape,
// or a size beyond 2^62 bytes.
func TensorBytes(typ TensorType, shape []uint64) (uint64, error) {
	if !knownType(typ) {
		return 0, fmt.Errorf("unknown tensor type id %d", uint32(typ))
	}
	if len(shape) == 0 || len(shape) > ggufMaxDims {
		return 0, fmt.Errorf("tensor has %d dimensions, want 1 to %d", len(shape), ggufMaxDims)
	}
	const limit = 1 << 62
	n := uint64(1)
	for i, d := range shape {
		if d == 0 {
			return 0, fmt.Errorf("dimension %d of shape %v is 0", i, shape)
		}
		if d > limit || n > limit/d {
			return 0, fmt.Errorf("shape %v has more than 2^62 elements", shape)
		}
		n *= d
	}
	if b := typeBlockElems(typ); shape[0]%b != 0 {
		return 0, fmt.Errorf("%s needs the innermost dimension to be a multiple of %d, found shape %v", typ, b, shape)
	}
	if n > limit/4 {
		return 0, fmt.Errorf("shape %v is too large", shape)
	}
	if typ == TypeI2_S && n%I2SBlockElems != 0 {
		return 0, fmt.Errorf("I2_S needs a multiple of %d elements, found shape %v", I2SBlockElems, shape)
	}
	size, err := EncodedSize(typ, int(n))
	if err != nil {
		return 0, fmt.Errorf("shape %v: %v", shape, err)
	}
	return uint64(size), nil
}

// Elements returns the number of elements of t (the product of its shape; 0 for no shape).
func (t *Tensor) Elements() uint64 {
	if len(t.Shape) == 0 {
		return 0
	}
	n := uint64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// GGUF is a parsed GGUF file (ggml docs/gguf.md). Metadata values keep their GGUF types as Go
// types: scalars are uint8, int8, uint16, int16, uint32, int32, uint64, int64, float32, float64,
// bool or string; arrays of scalars are the matching typed slices ([]uint8 ... []float64, []bool,
// []string); an array of arrays is []any whose elements are themselves such slices (or []any).
// Keys lists the metadata keys in file order, which the writer follows.
//
// Tensors are in file order; their Data aliases the memory-mapped file and is valid until Close.
// Offsets[i] is Tensors[i]'s offset in bytes from DataOffset, the aligned start of the data
// section.
type GGUF struct {
	Path       string
	Version    uint32 // 2 or 3
	Keys       []string
	Meta       map[string]any
	Tensors    []*Tensor
	Offsets    []uint64
	Alignment  uint64 // bytes; general.alignment or 32
	DataOffset uint64 // byte offset of the data section from the start of the file

	close func() error
}

// Tensor returns the tensor named name, or nil.
func (g *GGUF) Tensor(name string) *Tensor {
	for _, t := range g.Tensors {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// TensorMap returns the tensors by name.
func (g *GGUF) TensorMap() map[string]*Tensor {
	m := make(map[string]*Tensor, len(g.Tensors))
	for _, t := range g.Tensors {
		m[t.Name] = t
	}
	return m
}

// Set sets metadata key to v, appending key to Keys when it is new. v must be one of the value
// types listed on GGUF (checked when written).
func (g *GGUF) Set(key string, v any) {
	if g.Meta == nil {
		g.Meta = map[string]any{}
	}
	if _, ok := g.Meta[key]; !ok {
		g.Keys = append(g.Keys, key)
	}
	g.Meta[key] = v
}

// Close releases the file mapping; tensor Data must not be used after. Closing twice is harmless.
func (g *GGUF) Close() error {
	if g == nil || g.close == nil {
		return nil
	}
	c := g.close
	g.close = nil
	return c()
}

// OpenGGUF memory-maps and parses the GGUF file at path (versions 2 and 3, little-endian). The
// tensor data is not read: Tensor.Data slices the mapping. Every count and size in the file is
// checked against the file size before anything is allocated from it; errors name the file, the
// key or tensor, and the byte offset. Call Close when done.
func OpenGGUF(path string) (*GGUF, error) {
	data, unmap, err := mapFile(path)
	if err != nil {
		return nil, err
	}
	g, err := ParseGGUF(path, data)
	if err != nil {
		_ = unmap()
		return nil, err
	}
	g.close = unmap
	return g, nil
}

// ParseGGUF parses a whole GGUF file held in data; name labels errors (usually the file path).
// Tensor.Data aliases data. Metadata values are copies.
func ParseGGUF(name string, data []byte) (*GGUF, error) {
	r := &ggufReader{name: name, buf: data}
	magic, err := r.u32("magic")
	if err != nil {
		return nil, err
	}
	if magic != GGUFMagic {
		return nil, fmt.Errorf("%s: not a GGUF file: magic %q at byte 0, want \"GGUF\"", name, data[:4])
	}
	version, err := r.u32("version")
	if err != nil {
		return nil, err
	}
	switch {
	case version == 1:
		return nil, fmt.Errorf("%s: GGUF version 1 (byte 4) is not supported; only versions 2 and 3", name)
	case version != 2 && version != 3:
		if bits := uint32(version>>24 | (version>>8)&0xff00 | (version<<8)&0xff0000 | version<<24); bits == 2 || bits == 3 {
			return nil, fmt.Errorf("%s: big-endian GGUF (version bytes at byte 4) is not supported", name)
		}
		return nil, fmt.Errorf("%s: unsupported GGUF version %d at byte 4; only versions 2 and 3", name, version)
	}
	g := &GGUF{Path: name, Version: version, Meta: map[string]any{}, Alignment: GGUFDefaultAlignment}

	nTensors, err := r.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := r.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at least
	// 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset).
	if err := r.fits(nKV, 13, "metadata count"); err != nil {
		return nil, err
	}
	g.Keys = make([]string, 0, nKV)
	for i := uint64(0); i < nKV; i++ {
		at := r.off
		key, err := r.str(fmt.Sprintf("metadata key #%d", i))
		if err != nil {
			return nil, err
		}
		if _, dup := g.Meta[key]; dup {
			return nil, fmt.Errorf("%s: duplicate metadata key %q at byte %d", name, key, at)
		}
		typ, err := r.u32("type of key " + quote(key))
		if err != nil {
			return nil, err
		}
		v, err := r.value(typ, key, 0)
		if err != nil {
			return nil, err
		}
		g.Keys = append(g.Keys, key)
		g.Meta[key] = v
	}
	if v, ok := g.Meta[GGUFAlignmentKey]; ok {
		a, ok := v.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("%s: key %s = %v (%T): want a uint32 power of two", name, GGUFAlignmentKey, v, v)
		}
		g.Alignment = uint64(a)
	}

	if err := r.fits(nTensors, 32, "tensor count"); err != nil {
		return nil, err
	}
	g.Tensors = make([]*Tensor, 0, nTensors)
	g.Offsets = make([]uint64, 0, nTensors)
	sizes := make([]uint64, 0, nTensors)
	seen := make(map[string]bool, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		at := r.off
		tname, err := r.str(fmt.Sprintf("name of tensor #%d", i))
		if err != nil {
			return nil, err
		}
		if seen[tname] {
			return nil, fmt.Errorf("%s: duplicate tensor name %q at byte %d", name, tname, at)
		}
		seen[tname] = true
		what := "tensor " + quote(tname)
		dimAt := r.off
		nd, err := r.u32("dimension count of " + what)
		if err != nil {
			return nil, err
		}
		if nd == 0 || nd > ggufMaxDims {
			return nil, fmt.Errorf("%s: %s has %d dimensions at byte %d, want 1 to %d", name, what, nd, dimAt, ggufMaxDims)
		}
		shape := make([]uint64, nd)
		for d := range shape {
			if shape[d], err = r.u64("shape of " + what); err != nil {
				return nil, err
			}
		}
		typAt := r.off
		typ, err := r.u32("type of " + what)
		if err != nil {
			return nil, err
		}
		off, err := r.u64("data offset of " + what)
		if err != nil {
			return nil, err
		}
		if !knownType(TensorType(typ)) {
			return nil, fmt.Errorf("%s: %s has unknown tensor type id %d at byte %d", name, what, typ, typAt)
		}
		size, err := TensorBytes(TensorType(typ), shape)
		if err != nil {
			return nil, fmt.Errorf("%s: %s (info at byte %d): %v", name, what, at, err)
		}
		if off%g.Alignment != 0 {
			return nil, fmt.Errorf("%s: %s data offset %d (at byte %d) is not a multiple of the alignment %d", name, what, off, typAt+4, g.Alignment)
		}
		g.Tensors = append(g.Tensors, &Tensor{Name: tname, Type: TensorType(typ), Shape: shape})
		g.Offsets = append(g.Offsets, off)
		sizes = append(sizes, size)
	}

	g.DataOffset = alignUp(r.off, g.Alignment)
	fileSize := uint64(len(data))
	for i, t := range g.Tensors {
		off, size := g.Offsets[i], sizes[i]
		if g.DataOffset > fileSize || off > fileSize-g.DataOffset || size > fileSize-g.DataOffset-off {
			return nil, fmt.Errorf("%s: tensor %q: %d bytes of %s %v at byte %d run past the end of the file (%d bytes)",
				name, t.Name, size, t.Type, t.Shape, g.DataOffset+off, fileSize)
		}
		start := g.DataOffset + off
		t.Data = data[start : start+size : start+size]
	}
	return g, nil
}

// alignUp rounds x up to a multiple of a (a power of two).
func alignUp(x, a uint64) uint64 { return (x + a - 1) &^ (a - 1) }

// quote formats s as a Go-quoted string for error messages.
func quote(s string) string { return fmt.Sprintf("%q", s) }

// ggufReader is a bounds-checked little-endian cursor over a GGUF file's bytes.
type ggufReader struct {
	name string
	buf  []byte
	off  uint64
}

// left is the number of bytes after the cursor.
func (r *ggufReader) left() uint64 { return uint64(len(r.buf)) - r.off }

// need returns an error naming what and the offset when fewer than n bytes are left.
func (r *ggufReader) need(n uint64, what string) error {
	if n > r.left() {
		return fmt.Errorf("%s: truncated: %s needs %d bytes at byte %d, only %d left", r.name, what, n, r.off, r.left())
	}
	return nil
}

// fits checks that count items of at least min bytes each can fit in the rest of the file.
func (r *ggufReader) fits(count, min uint64, what string) error {
	if count > r.left()/min {
		return fmt.Errorf("%s: %s %d at byte %d is impossible: %d bytes left in the file", r.name, what, count, r.off, r.left())
	}
	return nil
}

func (r *ggufReader) bytes(n uint64, what string) ([]byte, error) {
	if err := r.need(n, what); err != nil {
		return nil, err
	}
	b := r.buf[r.off : r.off+n]
	r.off += n
	return b, nil
}

func (r *ggufReader) u32(what string) (uint32, error) {
	b, err := r.bytes(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *ggufReader) u64(what string) (uint64, error) {
	b, err := r.bytes(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// str reads a GGUF string: a uint64 byte length then that many bytes (UTF-8, not terminated).
func (r *ggufReader) str(what string) (string, error) {
	s, err := r.rawStr()
	if err != nil {
		return "", r.strErr(err, what)
	}
	return s, nil
}

// errStrLen marks a string whose length field does not fit.
var errStrLen = errors.New("string length")

// rawStr reads a GGUF string; on failure r.off is unchanged and the error is io.ErrUnexpectedEOF
// (no room for the length) or errStrLen (no room for the bytes).
func (r *ggufReader) rawStr() (string, error) {
	if r.left() < 8 {
		return "", io.ErrUnexpectedEOF
	}
	n := binary.LittleEndian.Uint64(r.buf[r.off:])
	if n > r.left()-8 {
		return "", errStrLen
	}
	s := string(r.buf[r.off+8 : r.off+8+n])
	r.off += 8 + n
	return s, nil
}

// strErr turns a rawStr failure at the cursor into an error naming what.
func (r *ggufReader) strErr(err error, what string) error {
	if err == errStrLen {
		n := binary.LittleEndian.Uint64(r.buf[r.off:])
		return fmt.Errorf("%s: %s: string length %d at byte %d exceeds the %d bytes left in the file", r.name, what, n, r.off, r.left()-8)
	}
	return r.need(8, what+" length")
}

// value reads one metadata value of type typ for key.
func (r *ggufReader) value(typ uint32, key string, depth int) (any, error) {
	if typ == ggufTypeArray {
		return r.array(key, depth)
	}
	what := "value of key " + quote(key)
	if typ == ggufTypeString {
		return r.str(what)
	}
	if typ >= uint32(len(ggufScalarSize)) {
		return nil, fmt.Errorf("%s: key %q has unknown value type %d at byte %d", r.name, key, typ, r.off-4)
	}
	at := r.off
	b, err := r.bytes(ggufScalarSize[typ], what)
	if err != nil {
		return nil, err
	}
	switch typ {
	case ggufTypeUint8:
		return b[0], nil
	case ggufTypeInt8:
		return int8(b[0]), nil
	case ggufTypeUint16:
		return binary.LittleEndian.Uint16(b), nil
	case ggufTypeInt16:
		return int16(binary.LittleEndian.Uint16(b)), nil
	case ggufTypeUint32:
		return binary.LittleEndian.Uint32(b), nil
	case ggufTypeInt32:
		return int32(binary.LittleEndian.Uint32(b)), nil
	case ggufTypeFloat32:
		return math.Float32frombits(binary.LittleEndian.Uint32(b)), nil
	case ggufTypeBool:
		if b[0] > 1 {
			return nil, fmt.Errorf("%s: key %q: bool byte %d at byte %d, want 0 or 1", r.name, key, b[0], at)
		}
		return b[0] == 1, nil
	case ggufTypeUint64:
		return binary.LittleEndian.Uint64(b), nil
	case ggufTypeInt64:
		return int64(binary.LittleEndian.Uint64(b)), nil
	default: // ggufTypeFloat64
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
	}
}

// array reads a GGUF array: uint32 element type, uint64 count, then the elements.
func (r *ggufReader) array(key string, depth int) (any, error) {
	if depth >= ggufMaxDepth {
		return nil, fmt.Errorf("%s: key %q: arrays nested deeper than %d at byte %d", r.name, key, ggufMaxDepth, r.off)
	}
	at := r.off
	et, err := r.u32("array element type of key " + quote(key))
	if err != nil {
		return nil, err
	}
	if et >= uint32(len(ggufScalarSize)) {
		return nil, fmt.Errorf("%s: key %q: unknown array element type %d at byte %d", r.name, key, et, at)
	}
	cntAt := r.off
	n, err := r.u64("array length of key " + quote(key))
	if err != nil {
		return nil, err
	}
	if n > r.left()/ggufMinValueSize(et) {
		return nil, fmt.Errorf("%s: key %q: array length %d at byte %d exceeds what the %d bytes left in the file can hold", r.name, key, n, cntAt, r.left())
	}
	what := "array of key " + quote(key)
	var raw []byte
	if sz := ggufScalarSize[et]; sz > 0 {
		raw, _ = r.bytes(n*sz, what) // fits: checked above
	}
	switch et {
	case ggufTypeUint8:
		return append([]uint8{}, raw...), nil
	case ggufTypeInt8:
		out := make([]int8, n)
		for i := range out {
			out[i] = int8(raw[i])
		}
		return out, nil
	case ggufTypeUint16:
		out := make([]uint16, n)
		for i := range out {
			out[i] = binary.LittleEndian.Uint16(raw[2*i:])
		}
		return out, nil
	case ggufTypeInt16:
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(binary.LittleEndian.Uint16(raw[2*i:]))
		}
		return out, nil
	case ggufTypeUint32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = binary.LittleEndian.Uint32(raw[4*i:])
		}
		return out, nil
	case ggufTypeInt32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		return out, nil
	case ggufTypeFloat32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		return out, nil
	case ggufTypeBool:
		out := make([]bool, n)
		for i := range out {
			if raw[i] > 1 {
				return nil, fmt.Errorf("%s: key %q: bool element %d is byte %d at byte %d, want 0 or 1", r.name, key, i, raw[i], r.off-n+uint64(i))
			}
			out[i] = raw[i] == 1
		}
		return out, nil
	case ggufTypeUint64:
		out := make([]uint64, n)
		for i := range out {
			out[i] = binary.LittleEndian.Uint64(raw[8*i:])
		}
		return out, nil
	case ggufTypeInt64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
		}
		return out, nil
	case ggufTypeFloat64:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:]))
		}
		return out, nil
	case ggufTypeString:
		out := make([]string, n)
		for i := range out {
			s, err := r.rawStr()
			if err != nil {
				return nil, r.strErr(err, fmt.Sprintf("element %d of %s", i, what))
			}
			out[i] = s
		}
		return out, nil
	default: // ggufTypeArray
		out := make([]any, n)
		for i := range out {
			v, err := r.array(key, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
}

// SortedKeys returns the metadata keys of g in lexical order (for display).
func (g *GGUF) SortedKeys() []string {
	k := append([]string(nil), g.Keys...)
	sort.Strings(k)
	return k
}

// mapFileLimit is the largest file bitgpu maps (the address space, not RAM, bounds it).
const mapFileLimit = 1 << 46

// mapFile maps path read-only and returns the bytes and a function that unmaps them.
func mapFile(path string) ([]byte, func() error, error) {
	f, err := fsutil.OpenRegular(path) // a FIFO or device would block or never end
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.IsDir() {
		return nil, nil, fmt.Errorf("%s: is a directory", path)
	}
	size := st.Size()
	if size > mapFileLimit {
		return nil, nil, fmt.Errorf("%s: file of %d bytes is too large to map", path, size)
	}
	if size == 0 {
		return []byte{}, func() error { return nil }, nil
	}
	data, unmap, err := mmapFile(f, int(size))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	forget := trackMapping(path, data)
	return data, func() error { forget(); return unmap() }, nil
}
