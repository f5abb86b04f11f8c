package cuda

import "github.com/edged/edged/quant"

// repacked describes the device layout of q4_0 and q8_0: per row, the
// quants of every block back to back (16 or 32 bytes a block, so that a
// kernel reads them in aligned 8- and 16-byte loads; GGUF's 18- and
// 34-byte blocks are only 2-byte aligned), then the blocks' f16 scales,
// the row padded to 16 bytes. Only this layout has kernels for these
// types (kernelSuffix).
type repacked struct {
	quants int // quant bytes of one block
}

var repackedTypes = map[quant.Type]repacked{
	quant.Q4_0: {16},
	quant.Q8_0: {32},
}

// rowBytes is the size of a repacked row of nb blocks.
func (r repacked) rowBytes(nb int) int { return (nb*(r.quants+2) + 15) &^ 15 }

// repack converts rows of GGUF blocks (2-byte scale, then quants) into the
// repacked layout.
func (r repacked) repack(data []byte, rows, cols int) []byte {
	nb := cols / 32
	src := 2 + r.quants
	out := make([]byte, rows*r.rowBytes(nb))
	for i := range rows {
		in := data[i*nb*src : (i+1)*nb*src]
		row := out[i*r.rowBytes(nb):]
		for b := range nb {
			blk := in[b*src : (b+1)*src]
			copy(row[b*r.quants:], blk[2:])
			copy(row[nb*r.quants+2*b:], blk[:2])
		}
	}
	return out
}
