package model

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/edged/edged/quant"
)

// Writer builds a GGUF version 3 file: metadata in the order set, then the
// tensor directory, then the aligned tensor data.
type Writer struct {
	keys      []string
	meta      map[string]any
	tensors   []writerTensor
	names     map[string]bool
	alignment int64
}

type writerTensor struct {
	info TensorInfo
	data []byte
}

// NewWriter returns an empty Writer with the default alignment of 32.
func NewWriter() *Writer {
	return &Writer{meta: map[string]any{}, names: map[string]bool{}, alignment: defaultAlignment}
}

// Set sets a metadata value. v must be one of the types File.Meta returns
// (arrays of arrays excluded); setting general.alignment changes the
// alignment of the data written.
func (w *Writer) Set(key string, v any) error {
	if _, _, err := valueType(v); err != nil {
		return fmt.Errorf("gguf: set %s: %w", key, err)
	}
	if key == "general.alignment" {
		a, ok := v.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("gguf: set general.alignment: %v is not a power of two (uint32)", v)
		}
		w.alignment = int64(a)
	}
	if _, ok := w.meta[key]; !ok {
		w.keys = append(w.keys, key)
	}
	w.meta[key] = v
	return nil
}

// AddTensor appends a tensor. dims are in ggml order (dims[0] is the row
// length) and data must hold exactly the tensor's bytes; it is not copied.
func (w *Writer) AddTensor(name string, typ quant.Type, dims []int64, data []byte) error {
	if w.names[name] {
		return fmt.Errorf("gguf: add tensor %s: duplicate name", name)
	}
	if len(dims) == 0 || len(dims) > maxDims {
		return fmt.Errorf("gguf: add tensor %s: %d dims, want 1 to %d", name, len(dims), maxDims)
	}
	n := int64(1)
	for _, d := range dims {
		if d <= 0 {
			return fmt.Errorf("gguf: add tensor %s: dims %v", name, dims)
		}
		n *= d
	}
	rowBytes, err := typ.RowSize(int(dims[0]))
	if err != nil {
		return fmt.Errorf("gguf: add tensor %s: %w", name, err)
	}
	size := int64(rowBytes) * (n / dims[0])
	if int64(len(data)) != size {
		return fmt.Errorf("gguf: add tensor %s: %d bytes of data, want %d for %v %s", name, len(data), size, dims, typ)
	}
	w.names[name] = true
	w.tensors = append(w.tensors, writerTensor{TensorInfo{Name: name, Dims: append([]int64(nil), dims...), Type: typ, Size: size}, data})
	return nil
}

// WriteTo writes the file to out.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	cw := &countWriter{w: bufio.NewWriterSize(out, 1<<20)}
	e := encoder{w: cw}
	e.u32(ggufMagic)
	e.u32(3)
	e.u64(uint64(len(w.tensors)))
	e.u64(uint64(len(w.keys)))
	for _, k := range w.keys {
		e.str(k)
		e.value(w.meta[k], true)
	}
	var off int64
	for i := range w.tensors {
		t := &w.tensors[i].info
		t.Offset = off
		e.str(t.Name)
		e.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			e.u64(uint64(d))
		}
		e.u32(uint32(t.Type))
		e.u64(uint64(off))
		off = alignUp(off+t.Size, w.alignment)
	}
	e.pad(w.alignment)
	for _, t := range w.tensors {
		e.bytes(t.data)
		e.pad(w.alignment)
	}
	if e.err == nil {
		e.err = cw.w.(*bufio.Writer).Flush()
	}
	return cw.n, e.err
}

// WriteFile writes the file to path atomically: a reader sees the old file
// or the whole new one, never a partial write.
func (w *Writer) WriteFile(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := w.WriteTo(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	// CreateTemp makes the file private; a model file is not.
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// encoder writes little-endian GGUF fields, keeping the first error.
type encoder struct {
	w   *countWriter
	err error
	buf [8]byte
}

func (e *encoder) bytes(b []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(b)
	}
}

func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.buf[:4], v)
	e.bytes(e.buf[:4])
}

func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.buf[:8], v)
	e.bytes(e.buf[:8])
}

func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	e.bytes([]byte(s))
}

func (e *encoder) pad(a int64) {
	var zero [64]byte
	for n := alignUp(e.w.n, a) - e.w.n; n > 0; n -= int64(len(zero)) {
		e.bytes(zero[:min(n, int64(len(zero)))])
	}
}

// value writes v, preceded by its type tag when tagged is set (array
// elements carry no tag of their own).
func (e *encoder) value(v any, tagged bool) {
	t, elem, _ := valueType(v)
	if tagged {
		e.u32(uint32(t))
	}
	if t == TypeArray {
		e.array(v, elem)
		return
	}
	switch x := v.(type) {
	case uint8:
		e.bytes([]byte{x})
	case int8:
		e.bytes([]byte{byte(x)})
	case bool:
		b := byte(0)
		if x {
			b = 1
		}
		e.bytes([]byte{b})
	case uint16:
		binary.LittleEndian.PutUint16(e.buf[:2], x)
		e.bytes(e.buf[:2])
	case int16:
		binary.LittleEndian.PutUint16(e.buf[:2], uint16(x))
		e.bytes(e.buf[:2])
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	case string:
		e.str(x)
	}
}

func (e *encoder) array(v any, elem ValueType) {
	e.u32(uint32(elem))
	switch x := v.(type) {
	case []string:
		writeArray(e, x)
	case []uint8:
		writeArray(e, x)
	case []int8:
		writeArray(e, x)
	case []bool:
		writeArray(e, x)
	case []uint16:
		writeArray(e, x)
	case []int16:
		writeArray(e, x)
	case []uint32:
		writeArray(e, x)
	case []int32:
		writeArray(e, x)
	case []float32:
		writeArray(e, x)
	case []uint64:
		writeArray(e, x)
	case []int64:
		writeArray(e, x)
	case []float64:
		writeArray(e, x)
	}
}

func writeArray[T any](e *encoder, a []T) {
	e.u64(uint64(len(a)))
	for _, x := range a {
		e.value(x, false)
	}
}

// valueType maps a Go value to its GGUF type (and element type for arrays).
func valueType(v any) (t, elem ValueType, err error) {
	switch v.(type) {
	case uint8:
		return TypeUint8, 0, nil
	case int8:
		return TypeInt8, 0, nil
	case bool:
		return TypeBool, 0, nil
	case uint16:
		return TypeUint16, 0, nil
	case int16:
		return TypeInt16, 0, nil
	case uint32:
		return TypeUint32, 0, nil
	case int32:
		return TypeInt32, 0, nil
	case float32:
		return TypeFloat32, 0, nil
	case uint64:
		return TypeUint64, 0, nil
	case int64:
		return TypeInt64, 0, nil
	case float64:
		return TypeFloat64, 0, nil
	case string:
		return TypeString, 0, nil
	case []uint8:
		return TypeArray, TypeUint8, nil
	case []int8:
		return TypeArray, TypeInt8, nil
	case []bool:
		return TypeArray, TypeBool, nil
	case []uint16:
		return TypeArray, TypeUint16, nil
	case []int16:
		return TypeArray, TypeInt16, nil
	case []uint32:
		return TypeArray, TypeUint32, nil
	case []int32:
		return TypeArray, TypeInt32, nil
	case []float32:
		return TypeArray, TypeFloat32, nil
	case []uint64:
		return TypeArray, TypeUint64, nil
	case []int64:
		return TypeArray, TypeInt64, nil
	case []float64:
		return TypeArray, TypeFloat64, nil
	case []string:
		return TypeArray, TypeString, nil
	}
	return 0, 0, fmt.Errorf("unsupported metadata type %T", v)
}
