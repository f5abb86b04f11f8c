package quant_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/quant"
)

// allTypes lists every type with a block layout.
var allTypes = []quant.Type{
	quant.F32, quant.F16, quant.BF16,
	quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.Q8_0, quant.Q8_1,
	quant.Q2_K, quant.Q3_K, quant.Q4_K, quant.Q5_K, quant.Q6_K, quant.Q8_K,
}

// span sets want[from:to] to v.
type span struct {
	from, to int
	v        float32
}

// block returns a zeroed block of n bytes with the given bytes set.
func block(n int, set map[int]byte) []byte {
	b := make([]byte, n)
	for i, v := range set {
		b[i] = v
	}
	return b
}

// TestDequantizeBlocks decodes one hand-built block per type whose values
// were worked out by hand from the layout, so that every field (scales,
// mins, nibble order, high bits) is pinned down. Elements not listed are 0.
func TestDequantizeBlocks(t *testing.T) {
	tests := []struct {
		typ   quant.Type
		block []byte
		spans []span
		at    map[int]float32
	}{
		{quant.F32, []byte{0x00, 0x00, 0xc0, 0x3f}, nil, map[int]float32{0: 1.5}},
		{quant.F16, []byte{0x00, 0x3e}, nil, map[int]float32{0: 1.5}},
		{quant.BF16, []byte{0xc0, 0x3f}, nil, map[int]float32{0: 1.5}},
		{
			// d=0.5; x = (q-8)·d; qs[0]=0x8f: element 0 is 15, element 16 is 8.
			quant.Q4_0, block(18, map[int]byte{1: 0x38, 2: 0x8f, 17: 0x10}),
			[]span{{0, 32, -4}}, map[int]float32{0: 3.5, 16: 0, 31: -3.5},
		},
		{
			// d=0.5, m=-1; x = q·d + m.
			quant.Q4_1, block(20, map[int]byte{1: 0x38, 3: 0xbc, 4: 0x8f, 19: 0x10}),
			[]span{{0, 32, -1}}, map[int]float32{0: 6.5, 16: 3, 31: -0.5},
		},
		{
			// d=1; qh=0x80000001 gives elements 0 and 31 their fifth bit; x = (q-16)·d.
			quant.Q5_0, block(22, map[int]byte{1: 0x3c, 2: 0x01, 5: 0x80, 6: 0x3f, 21: 0xf0}),
			[]span{{0, 32, -16}}, map[int]float32{0: 15, 16: -13, 31: 15},
		},
		{
			// d=1, m=0.5, qh and qs as for q5_0; x = q·d + m.
			quant.Q5_1, block(24, map[int]byte{1: 0x3c, 3: 0x38, 4: 0x01, 7: 0x80, 8: 0x3f, 23: 0xf0}),
			[]span{{0, 32, 0.5}}, map[int]float32{0: 31.5, 16: 3.5, 31: 31.5},
		},
		{
			// d=0.25; qs are int8.
			quant.Q8_0, block(34, map[int]byte{1: 0x34, 2: 0x80, 3: 0x7f, 33: 0xff}),
			nil, map[int]float32{0: -32, 1: 31.75, 31: -0.25},
		},
		{
			// d=0.25, s is ignored (set to garbage).
			quant.Q8_1, block(36, map[int]byte{1: 0x34, 2: 0x34, 3: 0x12, 4: 0x80, 5: 0x7f, 35: 0xff}),
			nil, map[int]float32{0: -32, 1: 31.75, 31: -0.25},
		},
		{
			// d=1, dmin=0.5. Sub-block 0: scale 1, min 2; sub-block 1: scale 3;
			// sub-block 6: scale 1; sub-block 9: scale 2, min 1. qs[0]=0xe7
			// holds element 0 (q=3) and element 96 (bits 6-7, q=3); qs[16]
			// element 16 (q=2); qs[50] element 146 (q=1).
			quant.Q2_K, block(84, map[int]byte{
				0: 0x21, 1: 0x03, 6: 0x01, 9: 0x12,
				16: 0xe7, 32: 0x02, 66: 0x01,
				81: 0x3c, 83: 0x38,
			}),
			[]span{{0, 16, -1}, {144, 160, -0.5}},
			map[int]float32{0: 2, 16: 6, 96: 3, 146: 1.5},
		},
		{
			// d=0.5. Scales (6 bits, offset 32; 0xaa puts 0b10 = 32 in every
			// high-bit pair): sub-block 0 is +2, 3 is +1, 9 is -3, the rest 0.
			// Element 0: q=3 with its hmask bit (bit 0 of hmask[0]); element
			// 50: q=2, bit 1 of hmask[18]; element 146: q=1, bit 4 of
			// hmask[18]. Elements without their hmask bit are q-4.
			quant.Q3_K, block(110, map[int]byte{
				0: 0x01, 18: 0x12,
				32: 0x03, 50: 0x08, 82: 0x01,
				96: 0x02, 97: 0xd0, 99: 0x01, 104: 0xaa, 105: 0x9a, 106: 0xaa, 107: 0xaa,
				109: 0x38,
			}),
			[]span{{0, 16, -4}, {48, 64, -2}, {144, 160, 6}},
			map[int]float32{0: 3, 50: 1, 146: -1.5},
		},
		{
			// d=0.5, dmin=0.25. Sub-block 0: scale 2, min 4 (bytes 0 and 4);
			// sub-block 5: scale 19, min 33 (low bits in byte 9, high bits in
			// the top of bytes 1 and 5). qs[0]=0x0f: element 0 is 15; qs[67]=0xa0:
			// element 163 (high nibble, sub-block 5) is 10.
			quant.Q4_K, block(144, map[int]byte{
				1: 0x38, 3: 0x34,
				4: 0x02, 5: 0x40, 8: 0x04, 9: 0x80, 13: 0x13,
				16: 0x0f, 83: 0xa0,
			}),
			[]span{{0, 32, -1}, {160, 192, -8.25}},
			map[int]float32{0: 14, 163: 86.75},
		},
		{
			// q4_K's block plus fifth bits: bit 0 of qh[0] (element 0, q=31)
			// and bit 5 of qh[3] (element 163, q=26).
			quant.Q5_K, block(176, map[int]byte{
				1: 0x38, 3: 0x34,
				4: 0x02, 5: 0x40, 8: 0x04, 9: 0x80, 13: 0x13,
				16: 0x01, 19: 0x20,
				48: 0x0f, 115: 0xa0,
			}),
			[]span{{0, 32, -1}, {160, 192, -8.25}},
			map[int]float32{0: 30, 163: 238.75},
		},
		{
			// d=0.5, int8 scales 2 (sub-block 0), -3 (5), 4 (10); x = d·sc·(q-32).
			// Element 0: low bits ql[0]&0xf=15, high bits qh[0]&3=3: q=63.
			// Element 81: ql[17]>>4=5, qh[17]>>4&3=2: q=37.
			// Element 163: ql[99]&0xf=1, qh[35]>>2&3=1: q=17.
			quant.Q6_K, block(210, map[int]byte{
				0: 0x0f, 17: 0x50, 99: 0x01,
				128: 0x03, 145: 0x20, 163: 0x04,
				192: 2, 197: 0xfd, 202: 4,
				209: 0x38,
			}),
			[]span{{0, 16, -32}, {80, 96, 48}, {160, 176, -64}},
			map[int]float32{0: 31, 81: -7.5, 163: -30},
		},
		{
			// d=-0.5 as float32; bsums are ignored (garbage).
			quant.Q8_K, func() []byte {
				b := block(292, map[int]byte{3: 0xbf, 4: 0x7f, 259: 0x80})
				for i := 260; i < 292; i++ {
					b[i] = 0xab
				}
				return b
			}(),
			nil, map[int]float32{0: -63.5, 255: 64},
		},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			require.Len(t, tt.block, tt.typ.TypeSize())
			n := tt.typ.BlockSize()
			want := make([]float32, n)
			for _, s := range tt.spans {
				for i := s.from; i < s.to; i++ {
					want[i] = s.v
				}
			}
			for i, v := range tt.at {
				want[i] = v
			}

			got := make([]float32, n)
			require.NoError(t, quant.Dequantize(tt.typ, tt.block, got))
			assert.Equal(t, want, got)

			// The same block after an all-zero one: blocks are independent
			// and laid end to end.
			two := append(make([]byte, len(tt.block)), tt.block...)
			got = make([]float32, 2*n)
			require.NoError(t, quant.Dequantize(tt.typ, two, got))
			assert.Equal(t, make([]float32, n), got[:n])
			assert.Equal(t, want, got[n:])
		})
	}
}

func TestDequantizeErrors(t *testing.T) {
	tests := []struct {
		name    string
		typ     quant.Type
		src     int // bytes
		dst     int // elements
		wantErr error
	}{
		{"unknown type", quant.Type(99), 18, 32, quant.ErrUnknownType},
		{"unknown type 16", quant.Type(16), 0, 0, quant.ErrUnknownType},
		{"partial block", quant.Q4_0, 18, 31, quant.ErrLength},
		{"source short", quant.Q4_0, 17, 32, quant.ErrLength},
		{"source long", quant.Q4_0, 19, 32, quant.ErrLength},
		{"partial super-block", quant.Q4_K, 144, 255, quant.ErrLength},
		{"k-quant source short", quant.Q6_K, 209, 256, quant.ErrLength},
		{"f32 odd bytes", quant.F32, 11, 3, quant.ErrLength},
		{"f16 source long", quant.F16, 8, 3, quant.ErrLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]float32, tt.dst)
			for i := range dst {
				dst[i] = 7
			}
			err := quant.Dequantize(tt.typ, make([]byte, tt.src), dst)
			require.ErrorIs(t, err, tt.wantErr)
			for _, v := range dst {
				require.Equal(t, float32(7), v, "dst written on error")
			}
		})
	}
}

func TestDequantizeEmpty(t *testing.T) {
	for _, typ := range allTypes {
		assert.NoError(t, quant.Dequantize(typ, nil, nil), typ)
	}
}

func TestDequantizeDoesNotAllocate(t *testing.T) {
	for _, typ := range allTypes {
		n := 4 * quant.QK_K
		size, err := typ.RowSize(n)
		require.NoError(t, err)
		src, dst := make([]byte, size), make([]float32, n)
		allocs := testing.AllocsPerRun(10, func() {
			if err := quant.Dequantize(typ, src, dst); err != nil {
				panic(err)
			}
		})
		assert.Zero(t, allocs, typ)
	}
}

// FuzzDequantize feeds arbitrary type ids, element counts and bytes to
// Dequantize: it must return an error or decode, never panic.
func FuzzDequantize(f *testing.F) {
	for _, typ := range allTypes {
		b := make([]byte, typ.TypeSize())
		for i := range b {
			b[i] = byte(i * 37)
		}
		f.Add(uint32(typ), uint16(typ.BlockSize()), b)
		f.Add(uint32(typ), uint16(typ.BlockSize()+1), b)
	}
	f.Add(uint32(1<<31), uint16(32), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, typ uint32, n uint16, src []byte) {
		dst := make([]float32, n)
		err := quant.Dequantize(quant.Type(typ), src, dst)
		if err == nil {
			size, rerr := quant.Type(typ).RowSize(int(n))
			if rerr != nil || size != len(src) {
				t.Fatalf("accepted %d bytes for %d elements of %v", len(src), n, quant.Type(typ))
			}
		} else if !errors.Is(err, quant.ErrLength) && !errors.Is(err, quant.ErrUnknownType) {
			t.Fatalf("unexpected error %v", err)
		}
		// Also decode as many whole blocks as src holds, so that arbitrary
		// bytes reach the decoders and not only the length checks.
		t2 := quant.Type(typ)
		if !t2.Known() {
			return
		}
		blocks := len(src) / t2.TypeSize()
		dst = make([]float32, blocks*t2.BlockSize())
		if err := quant.Dequantize(t2, src[:blocks*t2.TypeSize()], dst); err != nil {
			t.Fatalf("whole blocks: %v", err)
		}
	})
}

func BenchmarkDequantize(b *testing.B) {
	const n = 4096 // one row of a mid-sized model
	for _, typ := range allTypes {
		b.Run(typ.String(), func(b *testing.B) {
			size, err := typ.RowSize(n)
			require.NoError(b, err)
			src, dst := make([]byte, size), make([]float32, n)
			for i := range src {
				src[i] = byte(i * 131)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if err := quant.Dequantize(typ, src, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
