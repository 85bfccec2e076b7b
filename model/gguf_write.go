package model

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/bitgpu/bitgpu/internal/fsutil"
)

// TensorInfo describes one tensor to be written: its name, type and GGUF shape (Shape[0]
// innermost, 1 to 4 dimensions).
type TensorInfo struct {
	Name  string
	Type  TensorType
	Shape []uint64
}

// GGUFEncoder streams a GGUF file (ggml docs/gguf.md) in the layout llama.cpp and gguf-py write:
// header, metadata in the given key order, tensor infos, zero padding to the alignment, then each
// tensor's data in info order, each followed by zero padding to the alignment. Tensor offsets are
// assigned from that layout. Use NewGGUFEncoder, feed the tensor data in order with Write (in
// pieces of any size), then Close.
type GGUFEncoder struct {
	w         *bufio.Writer
	infos     []TensorInfo
	sizes     []uint64
	alignment uint64
	cur       int    // index of the tensor being written
	curLeft   uint64 // bytes of it still to come
	size      uint64 // bytes of the whole file
	err       error
}

// NewGGUFEncoder writes the header, the metadata (keys in order; each key must be in meta and
// each value one of the types listed on GGUF) and the tensor infos to w, and returns an encoder
// that expects the tensors' data. version is 2 or 3 (the layouts are identical). The alignment is
// meta["general.alignment"] (a uint32 power of two) or 32. It returns an error naming the key or
// tensor for an unsupported value type, a duplicate or missing key, a duplicate tensor name, an
// unknown tensor type or a bad shape.
func NewGGUFEncoder(w io.Writer, version uint32, keys []string, meta map[string]any, infos []TensorInfo) (*GGUFEncoder, error) {
	if version != 2 && version != 3 {
		return nil, fmt.Errorf("gguf: cannot write version %d; only 2 and 3", version)
	}
	if len(keys) != len(meta) {
		return nil, fmt.Errorf("gguf: %d metadata keys listed for %d values", len(keys), len(meta))
	}
	e := &GGUFEncoder{w: bufio.NewWriterSize(w, 1<<20), infos: infos, alignment: GGUFDefaultAlignment}
	if v, ok := meta[GGUFAlignmentKey]; ok {
		a, ok := v.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("gguf: key %s = %v (%T): want a uint32 power of two", GGUFAlignmentKey, v, v)
		}
		e.alignment = uint64(a)
	}
	seen := make(map[string]bool, len(infos))
	e.sizes = make([]uint64, len(infos))
	for i, ti := range infos {
		if seen[ti.Name] {
			return nil, fmt.Errorf("gguf: duplicate tensor name %q", ti.Name)
		}
		seen[ti.Name] = true
		size, err := TensorBytes(ti.Type, ti.Shape)
		if err != nil {
			return nil, fmt.Errorf("gguf: tensor %q: %v", ti.Name, err)
		}
		e.sizes[i] = size
	}

	var hdr []byte
	hdr = binary.LittleEndian.AppendUint32(hdr, GGUFMagic)
	hdr = binary.LittleEndian.AppendUint32(hdr, version)
	hdr = binary.LittleEndian.AppendUint64(hdr, uint64(len(infos)))
	hdr = binary.LittleEndian.AppendUint64(hdr, uint64(len(keys)))
	written := make(map[string]bool, len(keys))
	for _, k := range keys {
		v, ok := meta[k]
		if !ok {
			return nil, fmt.Errorf("gguf: key %q is listed but has no value", k)
		}
		if written[k] {
			return nil, fmt.Errorf("gguf: key %q is listed twice", k)
		}
		written[k] = true
		hdr = appendGGUFString(hdr, k)
		typ, err := ggufValueType(v)
		if err != nil {
			return nil, fmt.Errorf("gguf: key %q: %v", k, err)
		}
		hdr = binary.LittleEndian.AppendUint32(hdr, typ)
		if hdr, err = appendGGUFValue(hdr, v, 0); err != nil {
			return nil, fmt.Errorf("gguf: key %q: %v", k, err)
		}
	}
	var off uint64
	for i, ti := range infos {
		hdr = appendGGUFString(hdr, ti.Name)
		hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(ti.Shape)))
		for _, d := range ti.Shape {
			hdr = binary.LittleEndian.AppendUint64(hdr, d)
		}
		hdr = binary.LittleEndian.AppendUint32(hdr, uint32(ti.Type))
		hdr = binary.LittleEndian.AppendUint64(hdr, off)
		off += alignUp(e.sizes[i], e.alignment)
	}
	hdr = append(hdr, make([]byte, alignUp(uint64(len(hdr)), e.alignment)-uint64(len(hdr)))...)
	e.size = uint64(len(hdr)) + off
	if _, err := e.w.Write(hdr); err != nil {
		return nil, err
	}
	e.cur = -1
	e.next()
	return e, nil
}

// Size is the number of bytes the whole file has once Close returns: header, metadata, tensor
// infos, tensor data and padding.
func (e *GGUFEncoder) Size() uint64 { return e.size }

// next advances to the next tensor with data to write, padding the finished one.
func (e *GGUFEncoder) next() {
	for e.curLeft == 0 && e.cur+1 < len(e.infos) {
		e.cur++
		e.curLeft = e.sizes[e.cur]
	}
}

// Write appends p to the tensor data stream: the bytes of all tensors, in info order, without
// padding (the encoder pads each tensor). It returns an error when p runs past the last tensor.
func (e *GGUFEncoder) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n := 0
	for len(p) > 0 {
		if e.cur < 0 || e.cur >= len(e.infos) || e.curLeft == 0 {
			e.err = fmt.Errorf("gguf: %d bytes of tensor data beyond the last tensor", len(p))
			return n, e.err
		}
		k := uint64(len(p))
		if k > e.curLeft {
			k = e.curLeft
		}
		if _, err := e.w.Write(p[:k]); err != nil {
			e.err = err
			return n, err
		}
		n += int(k)
		p = p[k:]
		e.curLeft -= k
		if e.curLeft == 0 {
			size := e.sizes[e.cur]
			if _, err := e.w.Write(make([]byte, alignUp(size, e.alignment)-size)); err != nil {
				e.err = err
				return n, err
			}
			e.next()
		}
	}
	return n, nil
}

// WriteTensor writes the whole data of the next tensor, whose name must be name and whose data
// must be exactly its TensorBytes size; it returns an error otherwise.
func (e *GGUFEncoder) WriteTensor(name string, data []byte) error {
	if e.err != nil {
		return e.err
	}
	if e.cur < 0 || e.cur >= len(e.infos) || e.curLeft == 0 {
		return fmt.Errorf("gguf: tensor %q: all tensors are already written", name)
	}
	ti := e.infos[e.cur]
	if ti.Name != name {
		return fmt.Errorf("gguf: tensor %q written where %q comes next", name, ti.Name)
	}
	if e.curLeft != e.sizes[e.cur] || uint64(len(data)) != e.sizes[e.cur] {
		return fmt.Errorf("gguf: tensor %q: %s %v needs %d bytes, got %d", name, ti.Type, ti.Shape, e.sizes[e.cur], len(data))
	}
	_, err := e.Write(data)
	return err
}

// Close checks that every tensor's data was written and flushes the output. It does not close
// the underlying writer.
func (e *GGUFEncoder) Close() error {
	if e.err != nil {
		return e.err
	}
	if e.cur >= 0 && e.cur < len(e.infos) && e.curLeft > 0 {
		return fmt.Errorf("gguf: tensor %q: %d of %d bytes missing", e.infos[e.cur].Name, e.curLeft, e.sizes[e.cur])
	}
	return e.w.Flush()
}

// WriteGGUF writes g to w: version g.Version (3 when 0), metadata g.Meta in the order g.Keys, and
// g.Tensors with their Data, in the layout described on GGUFEncoder (g.Offsets and g.DataOffset
// are ignored: offsets follow from the layout). A file that OpenGGUF read and that was written in
// that layout (llama.cpp, gguf-py and this writer all do) comes back byte for byte. Errors are
// those of NewGGUFEncoder, or name a tensor whose Data has the wrong length.
func WriteGGUF(w io.Writer, g *GGUF) error { return writeGGUF(w, g, func(int64) {}) }

// writeGGUF is WriteGGUF calling setTotal with the file's size (GGUFEncoder.Size) before any
// tensor data is written.
func writeGGUF(w io.Writer, g *GGUF, setTotal func(int64)) error {
	version := g.Version
	if version == 0 {
		version = 3
	}
	infos := make([]TensorInfo, len(g.Tensors))
	for i, t := range g.Tensors {
		infos[i] = TensorInfo{Name: t.Name, Type: t.Type, Shape: t.Shape}
	}
	e, err := NewGGUFEncoder(w, version, g.Keys, g.Meta, infos)
	if err != nil {
		return err
	}
	setTotal(int64(e.Size()))
	for _, t := range g.Tensors {
		if err := e.WriteTensor(t.Name, t.Data); err != nil {
			return err
		}
	}
	return e.Close()
}

// WriteFileAtomic creates path through a temporary file in the same directory that fill writes
// and that is renamed over path only when fill and the final sync succeed, so an error leaves no
// half-written file behind; the temporary file is removed by fsutil.RemoveTemps when the command
// is interrupted. A path that exists and is not a regular file (a device such as /dev/null, a FIFO,
// a socket, a directory) is refused with an error naming it ("not a regular file"), never replaced.
// See fsutil.WriteAtomic.
func WriteFileAtomic(path string, fill func(w io.Writer) error) error {
	return fsutil.WriteAtomic(path, fill)
}

// WriteGGUFFile writes g to the file path (see WriteGGUF) through a temporary file that is
// renamed into place on success.
func WriteGGUFFile(path string, g *GGUF) error {
	return WriteFileAtomic(path, func(w io.Writer) error { return WriteGGUF(w, g) })
}

// appendGGUFString appends a GGUF string: uint64 length then the bytes.
func appendGGUFString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// ggufValueType returns the GGUF value type id of a Go metadata value.
func ggufValueType(v any) (uint32, error) {
	switch v.(type) {
	case uint8:
		return ggufTypeUint8, nil
	case int8:
		return ggufTypeInt8, nil
	case uint16:
		return ggufTypeUint16, nil
	case int16:
		return ggufTypeInt16, nil
	case uint32:
		return ggufTypeUint32, nil
	case int32:
		return ggufTypeInt32, nil
	case float32:
		return ggufTypeFloat32, nil
	case bool:
		return ggufTypeBool, nil
	case string:
		return ggufTypeString, nil
	case uint64:
		return ggufTypeUint64, nil
	case int64:
		return ggufTypeInt64, nil
	case float64:
		return ggufTypeFloat64, nil
	case []uint8, []int8, []uint16, []int16, []uint32, []int32, []float32, []bool, []string,
		[]uint64, []int64, []float64, []any:
		return ggufTypeArray, nil
	}
	return 0, fmt.Errorf("unsupported metadata value type %T", v)
}

// ggufElemType returns the element type id of a Go array value.
func ggufElemType(v any) uint32 {
	switch v.(type) {
	case []uint8:
		return ggufTypeUint8
	case []int8:
		return ggufTypeInt8
	case []uint16:
		return ggufTypeUint16
	case []int16:
		return ggufTypeInt16
	case []uint32:
		return ggufTypeUint32
	case []int32:
		return ggufTypeInt32
	case []float32:
		return ggufTypeFloat32
	case []bool:
		return ggufTypeBool
	case []string:
		return ggufTypeString
	case []uint64:
		return ggufTypeUint64
	case []int64:
		return ggufTypeInt64
	case []float64:
		return ggufTypeFloat64
	}
	return ggufTypeArray
}

// appendGGUFValue appends the encoding of v (without its type id).
func appendGGUFValue(b []byte, v any, depth int) ([]byte, error) {
	le := binary.LittleEndian
	switch x := v.(type) {
	case uint8:
		return append(b, x), nil
	case int8:
		return append(b, byte(x)), nil
	case uint16:
		return le.AppendUint16(b, x), nil
	case int16:
		return le.AppendUint16(b, uint16(x)), nil
	case uint32:
		return le.AppendUint32(b, x), nil
	case int32:
		return le.AppendUint32(b, uint32(x)), nil
	case float32:
		return le.AppendUint32(b, math.Float32bits(x)), nil
	case bool:
		if x {
			return append(b, 1), nil
		}
		return append(b, 0), nil
	case string:
		return appendGGUFString(b, x), nil
	case uint64:
		return le.AppendUint64(b, x), nil
	case int64:
		return le.AppendUint64(b, uint64(x)), nil
	case float64:
		return le.AppendUint64(b, math.Float64bits(x)), nil
	}
	if depth >= ggufMaxDepth {
		return nil, fmt.Errorf("arrays nested deeper than %d", ggufMaxDepth)
	}
	b = le.AppendUint32(b, ggufElemType(v))
	switch x := v.(type) {
	case []uint8:
		b = le.AppendUint64(b, uint64(len(x)))
		return append(b, x...), nil
	case []int8:
		b = le.AppendUint64(b, uint64(len(x)))
		for _, e := range x {
			b = append(b, byte(e))
		}
	case []uint16:
		b = le.AppendUint64(b, uint64(len(x)))
		for _, e := range x {
			b = le.AppendUint16(b, e)
		}
	case []int16:
		b = le.AppendUint64(b, uint64(len(x)))
		for _, e := range x {
			b = le.AppendUint16(b, uint16(e))
		}
	case []uint32:
		b = le.AppendUint64(b, uint64(len(x)))
		for _, e := range x {
			b = le.AppendUint32(b, e)
		}
	case []int32:
		b = le.AppendUint64(b, uint64(len(x)))
		for _, e := range x {
			b = le.AppendUint32(b, uint32(e))
		}
	case []float32:
		b = le.AppendUint64(b, uint64(len(x)))
		for _, e := range x {
			b = le.AppendUint32(b, math.Float32bits(e))
		}
	case []bool:
		b = le.AppendUint64(b, uint64(len(x)))
		for _, e := range x {
			if e {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
		}
	case []string:
		b = le.AppendUint64(b, uint64(len(x)))
		for _, e := range x {
			b = appendGGUFString(b, e)
		}
	case []uint64:
		b = le.AppendUint64(b, uint64(len(x)))
		for _, e := range x {
			b = le.AppendUint64(b, e)
		}
	case []int64:
		b = le.AppendUint64(b, uint64(len(x)))
		for _, e := range x {
			b = le.AppendUint64(b, uint64(e))
		}
	case []float64:
		b = le.AppendUint64(b, uint64(len(x)))
		for _, e := range x {
			b = le.AppendUint64(b, math.Float64bits(e))
		}
	case []any:
		b = le.AppendUint64(b, uint64(len(x)))
		for i, e := range x {
			if t, err := ggufValueType(e); err != nil || t != ggufTypeArray {
				return nil, fmt.Errorf("element %d of a nested array is %T, want an array", i, e)
			}
			var err error
			if b, err = appendGGUFValue(b, e, depth+1); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("unsupported metadata value type %T", v)
	}
	return b, nil
}
