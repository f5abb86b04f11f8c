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

// A checkpoint is everything a run needs to continue exactly. For MeZO:
// the step, the options (seed included: every perturbation and batch
// derives from it and the step) and the adapter's tensors; for Adam
// (GradTrainer) the step, the adapter's tensors and the moments. It is a
// zstd stream of
//
//	magic "EDGEDCKP" | u32 header length | header (JSON) |
//	per tensor: u32 name length | name | u64 values | float32 values
//
// little-endian, tensors in the trainer's order.
const checkpointMagic = "EDGEDCKP"

// checkpointHeader is the JSON header of a checkpoint.
type checkpointHeader struct {
	Version int         `json:"version"`
	Step    int         `json:"step"`
	Skipped int         `json:"skipped"`
	Options MeZOOptions `json:"options"` // a MeZO run's
	Tensors int         `json:"tensors"`
}

// maxCheckpointName bounds a tensor name read from a checkpoint.
const maxCheckpointName = 1 << 10

// SaveCheckpoint writes the run's state to path atomically.
func (m *MeZO) SaveCheckpoint(path string) error {
	return saveCheckpoint(path, checkpointHeader{Step: m.step, Skipped: m.skipped, Options: m.opts}, m.params)
}

// saveCheckpoint writes hdr and tensors to path atomically.
func saveCheckpoint(path string, hdr checkpointHeader, tensors []Param) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("adapt: checkpoint: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	hdr.Version, hdr.Tensors = 1, len(tensors)
	if err := writeCheckpoint(tmp, hdr, tensors); err != nil {
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

func writeCheckpoint(w io.Writer, hdr checkpointHeader, tensors []Param) error {
	zw, err := zstd.NewWriter(w)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(zw)
	raw, err := json.Marshal(hdr)
	if err != nil {
		zw.Close()
		return err
	}
	bw.WriteString(checkpointMagic)
	binary.Write(bw, binary.LittleEndian, uint32(len(raw)))
	bw.Write(raw)
	var b [4]byte
	for _, p := range tensors {
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
	hdr, err := loadCheckpoint(path, m.params)
	if err != nil {
		return err
	}
	m.step, m.skipped, m.opts = hdr.Step, hdr.Skipped, hdr.Options
	m.epoch = -1
	return nil
}

// loadCheckpoint reads the checkpoint at path into tensors, which must be
// the ones it holds (names and sizes, in order), and returns its header.
// A bad file leaves the tensors as they were.
func loadCheckpoint(path string, tensors []Param) (checkpointHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return checkpointHeader{}, fmt.Errorf("adapt: restore: %w", err)
	}
	defer f.Close()
	hdr, err := readCheckpoint(f, tensors)
	if err != nil {
		return hdr, fmt.Errorf("adapt: restore %s: %w", path, err)
	}
	return hdr, nil
}

func readCheckpoint(r io.Reader, tensors []Param) (checkpointHeader, error) {
	var hdr checkpointHeader
	zr, err := zstd.NewReader(r)
	if err != nil {
		return hdr, err
	}
	defer zr.Close()
	br := bufio.NewReader(zr)
	magic := make([]byte, len(checkpointMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != checkpointMagic {
		return hdr, fmt.Errorf("%w: bad magic (%v)", ErrCheckpoint, err)
	}
	var n uint32
	if err := binary.Read(br, binary.LittleEndian, &n); err != nil || n > 1<<20 {
		return hdr, fmt.Errorf("%w: header length %d (%v)", ErrCheckpoint, n, err)
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(br, raw); err != nil {
		return hdr, fmt.Errorf("%w: header: %w", ErrCheckpoint, err)
	}
	if err := json.Unmarshal(raw, &hdr); err != nil {
		return hdr, fmt.Errorf("%w: header: %w", ErrCheckpoint, err)
	}
	if hdr.Version != 1 {
		return hdr, fmt.Errorf("%w: version %d, want 1", ErrCheckpoint, hdr.Version)
	}
	if hdr.Tensors != len(tensors) {
		return hdr, fmt.Errorf("%w: %d tensors, the run has %d", ErrCheckpoint, hdr.Tensors, len(tensors))
	}
	// Read everything before changing the tensors, so that a bad file
	// leaves them as they were.
	vals := make([][]float32, len(tensors))
	for i, p := range tensors {
		var nameLen uint32
		if err := binary.Read(br, binary.LittleEndian, &nameLen); err != nil || nameLen > maxCheckpointName {
			return hdr, fmt.Errorf("%w: tensor %d: name length %d (%v)", ErrCheckpoint, i, nameLen, err)
		}
		name := make([]byte, nameLen)
		if _, err := io.ReadFull(br, name); err != nil {
			return hdr, fmt.Errorf("%w: tensor %d: %w", ErrCheckpoint, i, err)
		}
		var count uint64
		if err := binary.Read(br, binary.LittleEndian, &count); err != nil {
			return hdr, fmt.Errorf("%w: tensor %s: %w", ErrCheckpoint, name, err)
		}
		if string(name) != p.Name || count != uint64(len(p.Data)) {
			return hdr, fmt.Errorf("%w: tensor %d is %s with %d values, the run's is %s with %d", ErrCheckpoint, i, name, count, p.Name, len(p.Data))
		}
		v := make([]float32, count)
		if err := binary.Read(br, binary.LittleEndian, v); err != nil {
			return hdr, fmt.Errorf("%w: tensor %s: %w", ErrCheckpoint, name, err)
		}
		vals[i] = v
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return hdr, fmt.Errorf("%w: data after the last tensor", ErrCheckpoint)
	}
	for i, p := range tensors {
		copy(p.Data, vals[i])
	}
	return hdr, nil
}
