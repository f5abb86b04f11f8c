// Package model reads and writes GGUF files, describes model architectures
// and their hyper-parameters, holds the tokenizers, and imports llama2.c
// checkpoints.
package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/edged/edged/quant"
)

// GGUF format constants (ggml/docs/gguf.md).
const (
	ggufMagic        = 0x46554747 // "GGUF" little-endian
	defaultAlignment = 32
	maxDims          = 4 // GGML_MAX_DIMS
)

// ErrMalformed is wrapped by every error that reports a file that does not
// follow the GGUF format.
var ErrMalformed = errors.New("malformed gguf")

// ValueType is the type tag of a GGUF metadata value.
type ValueType uint32

// Metadata value types, as numbered by the GGUF specification.
const (
	TypeUint8 ValueType = iota
	TypeInt8
	TypeUint16
	TypeInt16
	TypeUint32
	TypeInt32
	TypeFloat32
	TypeBool
	TypeString
	TypeArray
	TypeUint64
	TypeInt64
	TypeFloat64
)

// scalarSize is the encoded size of a fixed-size value type, 0 for strings
// and arrays.
func (t ValueType) scalarSize() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name   string
	Dims   []int64 // ggml order: Dims[0] is the row length (contiguous)
	Type   quant.Type
	Offset int64 // from the start of the data section
	Size   int64 // bytes
}

// Elements is the number of values in the tensor.
func (t *TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// Rows is the number of rows of length Dims[0].
func (t *TensorInfo) Rows() int64 { return t.Elements() / t.Dims[0] }

// File is a parsed GGUF file. Metadata values are Go values of the types
// listed on Meta; tensor data are views into the file's bytes (a memory map
// when opened with Open).
type File struct {
	Version   uint32
	Alignment int64
	Tensors   []TensorInfo

	keys    []string
	meta    map[string]any
	byName  map[string]int
	data    []byte // the whole file
	dataOff int64  // start of the tensor data section
	unmap   func() error
}

// Parse reads a GGUF file held in memory. The File keeps references to data.
func Parse(data []byte) (*File, error) {
	r := &reader{buf: data}
	f := &File{data: data, Alignment: defaultAlignment, meta: map[string]any{}, byName: map[string]int{}}
	if err := f.parse(r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return f, nil
}

func (f *File) parse(r *reader) error {
	magic, err := r.u32("magic")
	if err != nil {
		return err
	}
	if magic != ggufMagic {
		return fmt.Errorf("magic: got %#08x, want %#08x (\"GGUF\")", magic, ggufMagic)
	}
	if f.Version, err = r.u32("version"); err != nil {
		return err
	}
	if f.Version != 2 && f.Version != 3 {
		return fmt.Errorf("version: %d is not supported (want 2 or 3)", f.Version)
	}
	nTensors, err := r.u64("tensor_count")
	if err != nil {
		return err
	}
	nKV, err := r.u64("metadata_kv_count")
	if err != nil {
		return err
	}
	// Each entry takes at least a few bytes, which bounds any honest count
	// by the file size before anything is allocated.
	if nKV > uint64(r.remaining())/(8+4+1) {
		return fmt.Errorf("metadata_kv_count: %d entries cannot fit in %d bytes", nKV, r.remaining())
	}
	for i := uint64(0); i < nKV; i++ {
		if err := f.parseKV(r); err != nil {
			return fmt.Errorf("metadata entry %d: %w", i, err)
		}
	}
	if nTensors > uint64(r.remaining())/(8+4+8+4+8) {
		return fmt.Errorf("tensor_count: %d tensors cannot fit in %d bytes", nTensors, r.remaining())
	}
	if v, ok := f.meta["general.alignment"]; ok {
		a, ok := v.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("general.alignment: %v is not a power of two (uint32)", v)
		}
		f.Alignment = int64(a)
	}
	f.Tensors = make([]TensorInfo, nTensors)
	for i := range f.Tensors {
		if err := f.parseTensorInfo(r, &f.Tensors[i]); err != nil {
			return fmt.Errorf("tensor %d: %w", i, err)
		}
		if _, dup := f.byName[f.Tensors[i].Name]; dup {
			return fmt.Errorf("tensor %d: duplicate name %q", i, f.Tensors[i].Name)
		}
		f.byName[f.Tensors[i].Name] = i
	}
	f.dataOff = alignUp(int64(r.off), f.Alignment)
	if len(f.Tensors) > 0 && f.dataOff > int64(len(r.buf)) {
		return fmt.Errorf("data section: starts at %d, past the end of the %d-byte file", f.dataOff, len(r.buf))
	}
	dataLen := int64(len(r.buf)) - f.dataOff
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if t.Offset%f.Alignment != 0 {
			return fmt.Errorf("tensor %q: offset %d is not a multiple of the alignment %d", t.Name, t.Offset, f.Alignment)
		}
		if t.Offset > dataLen || t.Size > dataLen-t.Offset {
			return fmt.Errorf("tensor %q: bytes [%d, %d) of the data section lie past its end (%d bytes; file truncated?)", t.Name, t.Offset, t.Offset+t.Size, dataLen)
		}
	}
	return nil
}

func (f *File) parseKV(r *reader) error {
	key, err := r.str("key")
	if err != nil {
		return err
	}
	if _, dup := f.meta[key]; dup {
		return fmt.Errorf("duplicate key %q", key)
	}
	vt, err := r.u32("value type of " + key)
	if err != nil {
		return err
	}
	v, err := r.value(ValueType(vt), key, 0)
	if err != nil {
		return err
	}
	f.keys = append(f.keys, key)
	f.meta[key] = v
	return nil
}

func (f *File) parseTensorInfo(r *reader, t *TensorInfo) error {
	var err error
	if t.Name, err = r.str("name"); err != nil {
		return err
	}
	nDims, err := r.u32(t.Name + ": n_dims")
	if err != nil {
		return err
	}
	if nDims == 0 || nDims > maxDims {
		return fmt.Errorf("%q: n_dims %d is outside [1, %d]", t.Name, nDims, maxDims)
	}
	t.Dims = make([]int64, nDims)
	elements := int64(1)
	for d := range t.Dims {
		n, err := r.u64(fmt.Sprintf("%s: dim %d", t.Name, d))
		if err != nil {
			return err
		}
		if n == 0 || n > math.MaxInt64/uint64(elements) {
			return fmt.Errorf("%q: dim %d = %d is zero or overflows the element count", t.Name, d, n)
		}
		t.Dims[d] = int64(n)
		elements *= int64(n)
	}
	typ, err := r.u32(t.Name + ": type")
	if err != nil {
		return err
	}
	t.Type = quant.Type(typ)
	if !t.Type.Known() {
		return fmt.Errorf("%q: unknown tensor type %d", t.Name, typ)
	}
	if t.Dims[0]%int64(t.Type.BlockSize()) != 0 {
		return fmt.Errorf("%q: row length %d is not a multiple of the %s block size %d", t.Name, t.Dims[0], t.Type, t.Type.BlockSize())
	}
	blocks := elements / int64(t.Type.BlockSize())
	if blocks > math.MaxInt64/int64(t.Type.TypeSize()) {
		return fmt.Errorf("%q: size overflows", t.Name)
	}
	t.Size = blocks * int64(t.Type.TypeSize())
	off, err := r.u64(t.Name + ": offset")
	if err != nil {
		return err
	}
	if off > math.MaxInt64 {
		return fmt.Errorf("%q: offset %d overflows", t.Name, off)
	}
	t.Offset = int64(off)
	return nil
}

// Close releases the file's memory map, if any. Tensor views are invalid
// afterwards.
func (f *File) Close() error {
	if f.unmap == nil {
		return nil
	}
	err := f.unmap()
	f.unmap, f.data = nil, nil
	return err
}

// Tensor returns the tensor named name.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.byName[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// TensorData returns the bytes of t: a view, not a copy.
func (f *File) TensorData(t *TensorInfo) []byte {
	start := f.dataOff + t.Offset
	return f.data[start : start+t.Size : start+t.Size]
}

// Keys returns the metadata keys in file order.
func (f *File) Keys() []string { return f.keys }

// Meta returns the metadata value of key. Scalars are uint8, int8, uint16,
// int16, uint32, int32, uint64, int64, float32, float64, bool or string;
// arrays are slices of those ([]string for strings) or []any for arrays of
// arrays.
func (f *File) Meta(key string) (any, bool) {
	v, ok := f.meta[key]
	return v, ok
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

// reader decodes little-endian GGUF fields, checking every length against
// what is left.
type reader struct {
	buf []byte
	off int
}

func (r *reader) remaining() int { return len(r.buf) - r.off }

func (r *reader) take(n int, field string) ([]byte, error) {
	if n < 0 || n > r.remaining() {
		return nil, fmt.Errorf("%s: need %d bytes at offset %d, file has %d (truncated?)", field, n, r.off, len(r.buf))
	}
	b := r.buf[r.off : r.off+n]
	r.off += n
	return b, nil
}

func (r *reader) u32(field string) (uint32, error) {
	b, err := r.take(4, field)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *reader) u64(field string) (uint64, error) {
	b, err := r.take(8, field)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (r *reader) str(field string) (string, error) {
	n, err := r.u64(field + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(r.remaining()) {
		return "", fmt.Errorf("%s: string length %d exceeds the %d bytes left", field, n, r.remaining())
	}
	b, _ := r.take(int(n), field)
	return string(b), nil
}

func (r *reader) value(t ValueType, key string, depth int) (any, error) {
	if t == TypeArray {
		return r.array(key, depth)
	}
	if t == TypeString {
		return r.str(key)
	}
	size := t.scalarSize()
	if size == 0 {
		return nil, fmt.Errorf("%s: unknown value type %d", key, t)
	}
	b, err := r.take(size, key)
	if err != nil {
		return nil, err
	}
	return decodeScalar(t, b), nil
}

func decodeScalar(t ValueType, b []byte) any {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return b[0]
	case TypeInt8:
		return int8(b[0])
	case TypeBool:
		return b[0] != 0
	case TypeUint16:
		return le.Uint16(b)
	case TypeInt16:
		return int16(le.Uint16(b))
	case TypeUint32:
		return le.Uint32(b)
	case TypeInt32:
		return int32(le.Uint32(b))
	case TypeFloat32:
		return math.Float32frombits(le.Uint32(b))
	case TypeUint64:
		return le.Uint64(b)
	case TypeInt64:
		return int64(le.Uint64(b))
	case TypeFloat64:
		return math.Float64frombits(le.Uint64(b))
	}
	return nil // not reached: scalarSize vetted the type
}

func (r *reader) array(key string, depth int) (any, error) {
	if depth > 2 {
		return nil, fmt.Errorf("%s: arrays nested deeper than 3", key)
	}
	et, err := r.u32(key + " array type")
	if err != nil {
		return nil, err
	}
	n, err := r.u64(key + " array length")
	if err != nil {
		return nil, err
	}
	elem := ValueType(et)
	minSize := uint64(elem.scalarSize())
	if elem == TypeString {
		minSize = 8
	} else if elem == TypeArray {
		minSize = 12
	} else if minSize == 0 {
		return nil, fmt.Errorf("%s: unknown array element type %d", key, et)
	}
	if n > uint64(r.remaining())/minSize {
		return nil, fmt.Errorf("%s: array of %d elements exceeds the %d bytes left", key, n, r.remaining())
	}
	switch elem {
	case TypeString:
		out := make([]string, n)
		for i := range out {
			if out[i], err = r.str(key); err != nil {
				return nil, err
			}
		}
		return out, nil
	case TypeArray:
		out := make([]any, n)
		for i := range out {
			if out[i], err = r.array(key, depth+1); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	b, _ := r.take(int(n*minSize), key)
	return decodeScalars(elem, b, int(n)), nil
}

func decodeScalars(t ValueType, b []byte, n int) any {
	size := t.scalarSize()
	switch t {
	case TypeUint8:
		return append([]uint8(nil), b...)
	case TypeInt8:
		return fill(make([]int8, n), b, size, func(x []byte) int8 { return int8(x[0]) })
	case TypeBool:
		return fill(make([]bool, n), b, size, func(x []byte) bool { return x[0] != 0 })
	case TypeUint16:
		return fill(make([]uint16, n), b, size, binary.LittleEndian.Uint16)
	case TypeInt16:
		return fill(make([]int16, n), b, size, func(x []byte) int16 { return int16(binary.LittleEndian.Uint16(x)) })
	case TypeUint32:
		return fill(make([]uint32, n), b, size, binary.LittleEndian.Uint32)
	case TypeInt32:
		return fill(make([]int32, n), b, size, func(x []byte) int32 { return int32(binary.LittleEndian.Uint32(x)) })
	case TypeFloat32:
		return fill(make([]float32, n), b, size, func(x []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(x)) })
	case TypeUint64:
		return fill(make([]uint64, n), b, size, binary.LittleEndian.Uint64)
	case TypeInt64:
		return fill(make([]int64, n), b, size, func(x []byte) int64 { return int64(binary.LittleEndian.Uint64(x)) })
	case TypeFloat64:
		return fill(make([]float64, n), b, size, func(x []byte) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(x)) })
	}
	return nil // not reached: array vetted the element type
}

func fill[T any](out []T, b []byte, size int, dec func([]byte) T) []T {
	for i := range out {
		out[i] = dec(b[i*size:])
	}
	return out
}
