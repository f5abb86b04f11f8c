package model

// Unicode as llama.cpp's tokenizers see it (src/unicode.cpp): a code point's
// category flags, its whitespace property, lower case and the first code
// point of its canonical decomposition; the decoding of text into code points
// that turns each invalid byte into U+FFFD; and GPT-2's byte-to-character
// mapping.
//
// llama.cpp generates its tables from the Unicode Character Database
// (Unicode 15.1 at the fixtures' version). These are built from Go's unicode
// package (Unicode 15.0) and golang.org/x/text/unicode/norm, which agree
// with llama.cpp's tables on every code point except the ones Unicode 15.1
// added: CJK Extension I (U+2EBF0..U+2EE5D, letters) and five ideographic
// description characters (U+2FFC..U+2FFF, U+31EF, symbols). Those are added
// by hand below, so the tables match llama.cpp's exactly. Categories, White
// Space, simple lower case and the first decomposed code point were compared
// over all 0x110000 code points.

import (
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// cptFlags is llama.cpp's unicode_cpt_flags: one general-category bit and
// the whitespace bit.
type cptFlags uint16

const (
	cfUndefined cptFlags = 1 << iota // Cn
	cfNumber                         // \p{N}
	cfLetter                         // \p{L}
	cfSeparator                      // \p{Z}
	cfMark                           // \p{M}
	cfPunct                          // \p{P}
	cfSymbol                         // \p{S}
	cfControl                        // \p{C} less Cn
	cfSpace                          // White_Space
)

// maxCodepoint bounds the code points the tables cover.
const maxCodepoint = 0x110000

// cptTable holds the flags of every code point in blocks of 256, identical
// blocks shared: about 80 KiB instead of 2 MiB.
type cptTable struct {
	index  [maxCodepoint >> 8]uint16
	blocks []cptFlags
}

// flags returns the flags of r; a value outside Unicode is undefined, as in
// llama.cpp.
func (t *cptTable) flags(r rune) cptFlags {
	if uint32(r) >= maxCodepoint {
		return cfUndefined
	}
	return t.blocks[int(t.index[r>>8])<<8|int(r&0xFF)]
}

// unicodeFlags returns the table, built on first use.
var unicodeFlags = sync.OnceValue(buildCptTable)

func buildCptTable() *cptTable {
	all := make([]cptFlags, maxCodepoint)
	for i := range all {
		all[i] = cfUndefined
	}
	set := func(rt *unicode.RangeTable, f cptFlags) {
		for _, r := range rt.R16 {
			for c := uint32(r.Lo); c <= uint32(r.Hi); c += uint32(r.Stride) {
				all[c] = f
			}
		}
		for _, r := range rt.R32 {
			for c := r.Lo; c <= r.Hi; c += r.Stride {
				all[c] = f
			}
		}
	}
	for _, c := range []struct {
		rt *unicode.RangeTable
		f  cptFlags
	}{
		{unicode.L, cfLetter}, {unicode.M, cfMark}, {unicode.N, cfNumber},
		{unicode.P, cfPunct}, {unicode.S, cfSymbol}, {unicode.Z, cfSeparator},
		{unicode.Cc, cfControl}, {unicode.Cf, cfControl}, {unicode.Co, cfControl}, {unicode.Cs, cfControl},
	} {
		set(c.rt, c.f)
	}
	// Unicode 15.1 additions (see the top of the file).
	for c := 0x2EBF0; c <= 0x2EE5D; c++ {
		all[c] = cfLetter
	}
	for _, c := range []int{0x2FFC, 0x2FFD, 0x2FFE, 0x2FFF, 0x31EF} {
		all[c] = cfSymbol
	}
	for _, r := range unicode.White_Space.R16 {
		for c := uint32(r.Lo); c <= uint32(r.Hi); c += uint32(r.Stride) {
			all[c] |= cfSpace
		}
	}
	for _, r := range unicode.White_Space.R32 {
		for c := r.Lo; c <= r.Hi; c += r.Stride {
			all[c] |= cfSpace
		}
	}

	t := &cptTable{}
	seen := map[[256]cptFlags]uint16{}
	for b := range t.index {
		var blk [256]cptFlags
		copy(blk[:], all[b<<8:])
		i, ok := seen[blk]
		if !ok {
			i = uint16(len(t.blocks) >> 8)
			seen[blk] = i
			t.blocks = append(t.blocks, blk[:]...)
		}
		t.index[b] = i
	}
	return t
}

// cptLower is llama.cpp's unicode_tolower: the simple lower-case mapping.
func cptLower(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}
	return unicode.ToLower(r)
}

// nfdFirst is what llama.cpp's unicode_cpts_normalize_nfd does to one code
// point: the first code point of its canonical decomposition (so "é" becomes
// "e" and its accent is dropped), or the code point itself.
func nfdFirst(r rune) rune {
	switch {
	case r < 0xC0 || r >= maxCodepoint || 0xD800 <= r && r <= 0xDFFF:
		return r
	case 0xAC00 <= r && r <= 0xD7A3: // Hangul syllable: its leading jamo
		return 0x1100 + (r-0xAC00)/588
	}
	var b [utf8.UTFMax]byte
	n := utf8.EncodeRune(b[:], r)
	d := norm.NFD.Properties(b[:n]).Decomposition()
	if len(d) == 0 {
		return r
	}
	first, _ := utf8.DecodeRune(d)
	return first
}

// nextCpt decodes the code point at s[i:] as llama.cpp's
// unicode_cpt_from_utf8 does: by the lead byte's announced length, checking
// only that continuation bytes look like continuation bytes (so overlong
// forms and surrogates decode). An invalid byte is U+FFFD and consumes one
// byte. A 4-byte form above U+10FFFF, on which llama.cpp throws, is also
// U+FFFD here.
func nextCpt(s string, i int) (rune, int) {
	b := s[i]
	switch {
	case b < 0x80:
		return rune(b), 1
	case b&0x40 == 0:
		return utf8.RuneError, 1
	case b&0x20 == 0:
		if i+1 < len(s) && s[i+1]&0xC0 == 0x80 {
			return rune(b&0x1F)<<6 | rune(s[i+1]&0x3F), 2
		}
	case b&0x10 == 0:
		if i+2 < len(s) && s[i+1]&0xC0 == 0x80 && s[i+2]&0xC0 == 0x80 {
			return rune(b&0x0F)<<12 | rune(s[i+1]&0x3F)<<6 | rune(s[i+2]&0x3F), 3
		}
	case b&0x08 == 0:
		if i+3 < len(s) && s[i+1]&0xC0 == 0x80 && s[i+2]&0xC0 == 0x80 && s[i+3]&0xC0 == 0x80 {
			r := rune(b&0x07)<<18 | rune(s[i+1]&0x3F)<<12 | rune(s[i+2]&0x3F)<<6 | rune(s[i+3]&0x3F)
			if r < maxCodepoint {
				return r, 4
			}
		}
	}
	return utf8.RuneError, 1
}

// appendCpts appends the code points of s (see nextCpt).
func appendCpts(dst []rune, s string) []rune {
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			dst = append(dst, rune(c))
			i++
			continue
		}
		r, n := nextCpt(s, i)
		dst = append(dst, r)
		i += n
	}
	return dst
}

// appendCpt appends the UTF-8 form of r as llama.cpp's unicode_cpt_to_utf8
// writes it: surrogates included, as three bytes.
func appendCpt(dst []byte, r rune) []byte {
	switch {
	case r < 0x80:
		return append(dst, byte(r))
	case r < 0x800:
		return append(dst, 0xC0|byte(r>>6), 0x80|byte(r)&0x3F)
	case r < 0x10000:
		return append(dst, 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
	}
	return append(dst, 0xF0|byte(r>>18), 0x80|byte(r>>12)&0x3F, 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
}

// cptLen is the length of appendCpt's output for r.
func cptLen(r rune) int {
	switch {
	case r < 0x80:
		return 1
	case r < 0x800:
		return 2
	case r < 0x10000:
		return 3
	}
	return 4
}

// byteMap is GPT-2's reversible mapping of bytes to printable characters
// (llama.cpp's unicode_byte_to_utf8): the printable Latin-1 bytes stand for
// themselves, the other 68 become U+0100.. in byte order.
type byteMap struct {
	char   [256]string  // the UTF-8 text of each byte's character
	byteOf [0x144]int16 // the byte a character below U+0144 stands for, or -1
}

var gpt2Bytes = sync.OnceValue(func() *byteMap {
	m := &byteMap{}
	for i := range m.byteOf {
		m.byteOf[i] = -1
	}
	n := 0
	for b := range 256 {
		r := rune(b)
		if !(0x21 <= b && b <= 0x7E || 0xA1 <= b && b <= 0xAC || 0xAE <= b && b <= 0xFF) {
			r = rune(256 + n)
			n++
		}
		m.char[b] = string(r)
		m.byteOf[r] = int16(b)
	}
	return m
})

// byteOfChar returns the byte a mapped character stands for.
func (m *byteMap) byteOfChar(r rune) (byte, bool) {
	if r < 0 || int(r) >= len(m.byteOf) || m.byteOf[r] < 0 {
		return 0, false
	}
	return byte(m.byteOf[r]), true
}
