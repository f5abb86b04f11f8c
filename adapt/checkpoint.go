package adapt

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
)

// A checkpoint is everything a MeZO run needs to continue exactly: the
// step, the options (seed included: every perturbation and batch derives
// from it and the step) and the adapter's tensors. It is a zstd stream of
//
//	magic "EDGEDCKP" | u32 header length | header (JSON) |
//	per tensor: u32 name length | name | u64 values | float32 values
//
// little-endian, tensors in Params order.
const checkpointMagic = "EDGEDCKP"

// checkpointHeader is the JSON header of a checkpoint.
type checkpointHeader struct {
	Version int         `json:"version"`
	Step    int         `json:"step"`
	Skipped int         `json:"skipped"`
	Options MeZOOptions `json:"options"`
	Tensors int         `json:"tensors"`
}

// maxCheckpointName bounds a tensor name read from a checkpoint.
const maxCheckpointName = 1 << 10

// SaveCheckpoint writes the run's state to path atomically.
func (m *MeZO) SaveCheckpoint(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("adapt: checkpoint: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := m.writeCheckpoint(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("adapt: checkpoint %s: %w", path, err)
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		return fmt.Errorf("adapt: checkpoint %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("adapt: checkpoint: %w", err)
	}
	return nil
}

func (m *MeZO) writeCheckpoint(w io.Writer) error {
	zw, err := zstd.NewWriter(w)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(zw)
	hdr, err := json.Marshal(checkpointHeader{Version: 1, Step: m.step, Skipped: m.skipped, Options: m.opts, Tensors: len(m.params)})
	if err != nil {
		zw.Close()
		return err
	}
	bw.WriteString(checkpointMagic)
	binary.Write(bw, binary.LittleEndian, uint32(len(hdr)))
	bw.Write(hdr)
	var b [4]byte
	for _, p := range m.params {
		binary.Write(bw, binary.LittleEndian, uint32(len(p.Name)))
		bw.WriteString(p.Name)
		binary.Write(bw, binary.LittleEndian, uint64(len(p.Data)))
		for _, v := range p.Data {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
			bw.Write(b[:])
		}
	}
	// bufio keeps the first write error and returns it from Flush.
	return errors.Join(bw.Flush(), zw.Close())
}

// Restore loads a checkpoint written by SaveCheckpoint for the same
// adapter layout: the step, the options and the tensors replace the
// trainer's own. Continuing then gives the same result as a run that was
// never interrupted (with the same data).
func (m *MeZO) Restore(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("adapt: restore: %w", err)
	}
	defer f.Close()
	if err := m.readCheckpoint(f); err != nil {
		return fmt.Errorf("adapt: restore %s: %w", path, err)
	}
	return nil
}

func (m *MeZO) readCheckpoint(r io.Reader) error {
	zr, err := zstd.NewReader(r)
	if err != nil {
		return err
	}
	defer zr.Close()
	br := bufio.NewReader(zr)
	magic := make([]byte, len(checkpointMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != checkpointMagic {
		return fmt.Errorf("%w: bad magic (%v)", ErrCheckpoint, err)
	}
	var n uint32
	if err := binary.Read(br, binary.LittleEndian, &n); err != nil || n > 1<<20 {
		return fmt.Errorf("%w: header length %d (%v)", ErrCheckpoint, n, err)
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(br, raw); err != nil {
		return fmt.Errorf("%w: header: %w", ErrCheckpoint, err)
	}
	var hdr checkpointHeader
	if err := json.Unmarshal(raw, &hdr); err != nil {
		return fmt.Errorf("%w: header: %w", ErrCheckpoint, err)
	}
	if hdr.Version != 1 {
		return fmt.Errorf("%w: version %d, want 1", ErrCheckpoint, hdr.Version)
	}
	if hdr.Tensors != len(m.params) {
		return fmt.Errorf("%w: %d tensors, the adapter has %d", ErrCheckpoint, hdr.Tensors, len(m.params))
	}
	// Read everything before changing the trainer, so that a bad file
	// leaves it as it was.
	vals := make([][]float32, len(m.params))
	for i, p := range m.params {
		var nameLen uint32
		if err := binary.Read(br, binary.LittleEndian, &nameLen); err != nil || nameLen > maxCheckpointName {
			return fmt.Errorf("%w: tensor %d: name length %d (%v)", ErrCheckpoint, i, nameLen, err)
		}
		name := make([]byte, nameLen)
		if _, err := io.ReadFull(br, name); err != nil {
			return fmt.Errorf("%w: tensor %d: %w", ErrCheckpoint, i, err)
		}
		var count uint64
		if err := binary.Read(br, binary.LittleEndian, &count); err != nil {
			return fmt.Errorf("%w: tensor %s: %w", ErrCheckpoint, name, err)
		}
		if string(name) != p.Name || count != uint64(len(p.Data)) {
			return fmt.Errorf("%w: tensor %d is %s with %d values, the adapter's is %s with %d", ErrCheckpoint, i, name, count, p.Name, len(p.Data))
		}
		v := make([]float32, count)
		if err := binary.Read(br, binary.LittleEndian, v); err != nil {
			return fmt.Errorf("%w: tensor %s: %w", ErrCheckpoint, name, err)
		}
		vals[i] = v
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: data after the last tensor", ErrCheckpoint)
	}
	for i, p := range m.params {
		copy(p.Data, vals[i])
	}
	m.step, m.skipped, m.opts = hdr.Step, hdr.Skipped, hdr.Options
	m.epoch = -1
	return nil
}
