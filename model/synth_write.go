package model

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"

	"github.com/edged/edged/quant"
)

// writer returns a Writer holding the plan's metadata and no tensors.
func (p *SynthPlan) writer() (*Writer, error) {
	w := NewWriter()
	for _, kv := range p.meta {
		if err := w.Set(kv.key, kv.val); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Synthesize writes a model in the given shape and file type to outPath,
// with random weights drawn from seed: the same arguments give the same
// bytes. The file appears atomically.
//
// Memory stays near one chunk of rows per core: the file is first written
// with zero tensor data (from one shared zero buffer the size of the
// largest tensor, whose pages are never written), then the tensors are
// generated, quantized and written in place chunk by chunk, on every core.
func Synthesize(shape Shape, ft FType, seed uint64, outPath string) error {
	return SynthesizeContext(context.Background(), shape, ft, seed, outPath)
}

// SynthesizeContext is Synthesize, stopping early (and writing nothing)
// when ctx is done.
func SynthesizeContext(ctx context.Context, shape Shape, ft FType, seed uint64, outPath string) (err error) {
	p, err := PlanSynth(shape, ft)
	if err != nil {
		return err
	}
	w, err := p.writer()
	if err != nil {
		return err
	}
	var largest int64
	for _, t := range p.Tensors {
		largest = max(largest, t.Size)
	}
	zero := make([]byte, largest)
	for _, t := range p.Tensors {
		if err := w.AddTensor(t.Name, t.Type, t.Dims, zero[:t.Size]); err != nil {
			return err
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(outPath), filepath.Base(outPath)+".*.tmp")
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := w.WriteTo(tmp); err != nil {
		return fmt.Errorf("synth: write %s: %w", tmp.Name(), err)
	}
	w, zero = nil, nil
	offsets, err := synthTensorOffsets(tmp.Name(), p.Tensors)
	if err != nil {
		return err
	}
	if err := p.fill(ctx, tmp, offsets, seed); err != nil {
		return fmt.Errorf("synth: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if err := os.Rename(tmp.Name(), outPath); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	return nil
}

// synthTensorOffsets reads back the file at path and returns the absolute offset
// of each tensor's data, checking that the directory is the plan's.
func synthTensorOffsets(path string, want []TensorInfo) ([]int64, error) {
	f, err := Open(path)
	if err != nil {
		return nil, fmt.Errorf("synth: read back %s: %w", path, err)
	}
	defer f.Close()
	if len(f.Tensors) != len(want) {
		return nil, fmt.Errorf("synth: %s: %d tensors, want %d", path, len(f.Tensors), len(want))
	}
	offsets := make([]int64, len(want))
	for i, t := range f.Tensors {
		if t.Name != want[i].Name || t.Type != want[i].Type || t.Size != want[i].Size {
			return nil, fmt.Errorf("synth: %s: tensor %d is %s %s (%d bytes), want %s %s (%d bytes)",
				path, i, t.Name, t.Type, t.Size, want[i].Name, want[i].Type, want[i].Size)
		}
		offsets[i] = f.dataOff + t.Offset
	}
	return offsets, nil
}

// synthChunk is the unit of work of fill: rows [row, row+rows) of tensor t.
type synthChunk struct {
	t, row, rows int
}

// synthChunkElems is about how many weights one chunk holds (4 MiB of float32).
const synthChunkElems = 1 << 20

// fill generates, quantizes and writes every tensor at its offset in out.
// Each row's values come from a generator seeded by (seed, tensor name,
// row), so the bytes do not depend on the number of workers.
func (p *SynthPlan) fill(ctx context.Context, out *os.File, offsets []int64, seed uint64) error {
	chunks := make(chan synthChunk)
	workers := runtime.GOMAXPROCS(0)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := p.newSynthGenerator(seed)
			for c := range chunks {
				if errs[w] == nil {
					errs[w] = g.chunk(out, offsets, c)
				}
			}
		}()
	}
	err := p.sendChunks(ctx, chunks)
	close(chunks)
	wg.Wait()
	return errors.Join(append(errs, err)...)
}

// sendChunks sends every chunk of every tensor, in file order, until ctx is
// done.
func (p *SynthPlan) sendChunks(ctx context.Context, chunks chan<- synthChunk) error {
	for i, t := range p.plan {
		rows := int(t.info.Rows())
		step := max(1, synthChunkElems/int(t.info.Dims[0]))
		for r := 0; r < rows; r += step {
			if err := ctx.Err(); err != nil {
				return err
			}
			select {
			case chunks <- synthChunk{t: i, row: r, rows: min(step, rows-r)}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// synthGenerator is one worker's state.
type synthGenerator struct {
	p      *SynthPlan
	seed   uint64
	pcg    *rand.PCG
	normal []float32 // synthNormalTable
	hashes []uint64  // FNV-1a of each tensor name
	src    []float32
	dst    []byte
}

func (p *SynthPlan) newSynthGenerator(seed uint64) *synthGenerator {
	g := &synthGenerator{p: p, seed: seed, pcg: rand.NewPCG(0, 0), normal: synthNormalTable(), hashes: make([]uint64, len(p.plan))}
	for i, t := range p.plan {
		h := fnv.New64a()
		h.Write([]byte(t.info.Name))
		g.hashes[i] = h.Sum64()
	}
	return g
}

// chunk writes one chunk.
func (g *synthGenerator) chunk(out *os.File, offsets []int64, c synthChunk) error {
	t := &g.p.plan[c.t]
	width := int(t.info.Dims[0])
	rowBytes := int(t.info.Size / t.info.Rows())
	g.src = slices.Grow(g.src[:0], c.rows*width)[:c.rows*width]
	g.dst = slices.Grow(g.dst[:0], c.rows*rowBytes)[:c.rows*rowBytes]
	for r := range c.rows {
		g.row(t, g.hashes[c.t], c.row+r, g.src[r*width:(r+1)*width])
	}
	if err := quant.Quantize(t.info.Type, g.src, g.dst); err != nil {
		return fmt.Errorf("%s: %w", t.info.Name, err)
	}
	_, err := out.WriteAt(g.dst, offsets[c.t]+int64(c.row)*int64(rowBytes))
	return err
}

// row fills x with row r of t.
func (g *synthGenerator) row(t *synthTensor, hash uint64, r int, x []float32) {
	switch t.init {
	case synthInitOnes:
		for i := range x {
			x[i] = 1
		}
		return
	case synthInitRopeFreqs:
		g.p.Shape.Llama3.freqFactors(float64(g.p.Shape.RopeTheta), g.p.Shape.headDim(), x)
		return
	}
	g.pcg.Seed(g.seed, synthMix(hash^synthMix(uint64(r))))
	scale := float32(0.02)
	if t.init == synthInitWeight {
		scale = float32(1 / math.Sqrt(float64(len(x))))
	}
	for i := 0; i < len(x); i += 2 {
		bits := g.pcg.Uint64()
		x[i] = synthRoundF16(synthNormal(g.normal, uint32(bits)) * scale)
		if i+1 < len(x) {
			x[i+1] = synthRoundF16(synthNormal(g.normal, uint32(bits>>32)) * scale)
		}
	}
}

// synthNormalBits sets the number of cells of the inverse-CDF table: 2^12,
// so that the table stays in the L1 cache.
const synthNormalBits = 12

// synthNormalTable holds the inverse of the standard normal CDF at the
// 2^synthNormalBits+1 points i/2^synthNormalBits (infinite at both ends).
var synthNormalTable = sync.OnceValue(func() []float32 {
	t := make([]float32, 1<<synthNormalBits+1)
	for i := range t {
		t[i] = float32(math.Sqrt2 * math.Erfinv(float64(i)/(1<<(synthNormalBits-1))-1))
	}
	return t
})

// synthNormal maps 32 uniform random bits to a standard normal value by
// inverting the CDF: linear interpolation in the table, whose cells are
// narrow enough that the error is below 1e-4 (F16 keeps 11 bits), except in
// the 32 outermost cells at each end (beyond 2.4 standard deviations),
// where the curve bends and the inverse is computed exactly. It is several
// times faster than rand.NormFloat64.
func synthNormal(table []float32, bits uint32) float32 {
	const shift, edge = 32 - synthNormalBits, 32
	i, frac := bits>>shift, float32(bits&(1<<shift-1))*(1.0/(1<<shift))
	if i < edge || i >= 1<<synthNormalBits-edge {
		u := (float64(bits) + 0.5) / (1 << 32)
		return float32(math.Sqrt2 * math.Erfinv(2*u-1))
	}
	lo, hi := table[i], table[i+1]
	return lo + float32((hi-lo)*frac) // float32() keeps the product from fusing into an FMA
}

// synthRoundF16 rounds v to the nearest F16 value, ties to even, as
// quant.F16ToF32(quant.F32ToF16(v)) does, by clearing the 13 low mantissa
// bits; values outside F16's normal range take that slower path.
func synthRoundF16(v float32) float32 {
	b := math.Float32bits(v)
	if exp := b >> 23 & 0xFF; exp < 127-14 || exp >= 127+15 {
		return quant.F16ToF32(quant.F32ToF16(v))
	}
	b += 0xFFF + b>>13&1
	return math.Float32frombits(b &^ 0x1FFF)
}

// synthMix is SplitMix64's output function: it spreads nearby inputs
// (consecutive rows) over unrelated generator states.
func synthMix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ x>>30) * 0xBF58476D1CE4E5B9
	x = (x ^ x>>27) * 0x94D049BB133111EB
	return x ^ x>>31
}

// freqFactors writes llama 3's divisor of each rotary frequency into
// out[0:headDim/2]: 1 for wavelengths shorter than OrigContext /
// HighFreqFactor, Factor for those longer than OrigContext / LowFreqFactor,
// and a smooth blend between.
func (r *RopeLlama3) freqFactors(theta float64, headDim int, out []float32) {
	orig := float64(r.OrigContext)
	lowWavelen, highWavelen := orig/r.LowFreqFactor, orig/r.HighFreqFactor
	for i := range out {
		freq := 1 / math.Pow(theta, float64(2*i)/float64(headDim))
		wavelen := 2 * math.Pi / freq
		switch {
		case wavelen < highWavelen:
			out[i] = 1
		case wavelen > lowWavelen:
			out[i] = float32(r.Factor)
		default:
			smooth := (orig/wavelen - r.LowFreqFactor) / (r.HighFreqFactor - r.LowFreqFactor)
			out[i] = float32(1 / ((1-smooth)/r.Factor + smooth))
		}
	}
}
