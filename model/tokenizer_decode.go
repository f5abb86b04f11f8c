package model

// Detokenization: what each token renders as (llama.cpp's token_to_piece),
// whole-text Decode, llama.cpp's own detokenize (Detokenize), and a
// streaming decoder that never emits part of a UTF-8 character.
//
// Decode is the inverse of Encode. It follows llama_detokenize with
// remove_special=false and unparse_special=false — control and unknown
// tokens render as nothing, and for SPM with add_space_prefix one leading
// space is removed from the first token's text — with two differences: a
// leading BOS is passed over first, so the space removed is the one Encode
// put before the text (llama.cpp removes it only when the very first token
// has it, so "<s>▁Hello" gives " Hello" there and "Hello" here); and no
// clean-up of tokenization spaces (Detokenize has it). So
// Decode(Encode(s, addSpecial, false)) == s for every s that SPM or
// byte-level BPE encodes without loss, with or without BOS.

import (
	"strings"
	"unicode/utf8"
)

// buildPieces renders every token once, special ones as their text
// (llama.cpp's token-to-piece cache, built with special=true). The pieces
// share one buffer.
func (t *Tokenizer) buildPieces() {
	ends := make([]int, len(t.texts))
	var buf []byte
	for id, s := range t.texts {
		if a := t.attrs[id]; a&(attrSpecial|attrUserDefined) != 0 {
			buf = append(buf, s...)
		} else {
			buf = t.fam.appendPiece(buf, s, a) // unused and undefined tokens render as nothing
		}
		ends[id] = len(buf)
	}
	all := string(buf)
	t.pieces = make([]string, len(t.texts))
	start := 0
	for id, end := range ends {
		t.pieces[id] = all[start:end]
		start = end
	}
}

// byteOfToken reads the byte of a "<0xXX>" token as llama.cpp's
// token_to_byte does: strtol over the two characters after "<0x".
func byteOfToken(s string) byte {
	var v byte
	for i := 3; i < len(s) && i < 5; i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | (c - '0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | (c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		default:
			return v
		}
	}
	return v
}

// Piece returns the bytes token id stands for: a byte token's byte, a
// normal token's text with "▁" as a space, a control, unknown or
// user-defined token's own text ("<s>"), as llama.cpp's token_to_piece with
// special=true. It is nil for an id outside the vocabulary.
func (t *Tokenizer) Piece(id int32) []byte {
	if id < 0 || int(id) >= len(t.pieces) {
		return nil
	}
	return []byte(t.pieces[id])
}

// render is the text of id in decoded output; special asks for control and
// unknown tokens as their text rather than nothing. Ids outside the
// vocabulary render as nothing.
func (t *Tokenizer) render(id int32, special bool) string {
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	if !special && t.attrs[id]&attrSpecial != 0 {
		return ""
	}
	return t.pieces[id]
}

// Decode returns the text of ids: control and unknown tokens render as
// nothing, and the space Encode put before the text is removed (see the top
// of this file). Bytes are returned as the tokens give them, so the text is
// not valid UTF-8 if the ids do not spell valid UTF-8.
func (t *Tokenizer) Decode(ids []int32) string { return t.decode(ids, false) }

// DecodeSpecial is Decode with control and unknown tokens rendered as their
// text ("<s>"), llama.cpp's unparse_special.
func (t *Tokenizer) DecodeSpecial(ids []int32) string { return t.decode(ids, true) }

func (t *Tokenizer) decode(ids []int32, special bool) string {
	var b strings.Builder
	lead := leadState{strip: t.stripLead}
	for _, id := range ids {
		b.WriteString(lead.apply(t, id, t.render(id, special)))
	}
	return b.String()
}

// leadState removes the space add_space_prefix put before the text: one
// leading space of the first token, or of the second when the first is BOS.
type leadState struct {
	strip bool // still to remove
	seen  bool // a token has been seen
}

func (l *leadState) apply(t *Tokenizer, id int32, piece string) string {
	first := !l.seen
	l.seen = true
	if !l.strip || first && id == t.bos && t.bos >= 0 {
		return piece
	}
	l.strip = false
	return strings.TrimPrefix(piece, " ")
}

// StreamDecoder turns ids into text one id at a time, for streaming: it
// returns only whole UTF-8 characters and holds back the bytes of one that
// later tokens complete (byte-fallback tokens split a character). Its output
// does not depend on later tokens otherwise, and concatenated it equals
// Decode of the same ids when those spell valid UTF-8. A StreamDecoder is
// for one goroutine.
type StreamDecoder struct {
	t       *Tokenizer
	lead    leadState
	pending []byte // the start of a character not yet complete
}

// NewStreamDecoder returns a decoder for a sequence from its start: like
// Decode, it removes the space Encode put before the text.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder {
	return &StreamDecoder{t: t, lead: leadState{strip: t.stripLead}}
}

// NewContinuationDecoder returns a decoder for ids that continue an earlier
// text, such as tokens generated after a prompt: every token renders with
// its own leading space (llama.cpp's server streams token_to_piece this way).
func (t *Tokenizer) NewContinuationDecoder() *StreamDecoder {
	return &StreamDecoder{t: t}
}

// Push adds one id and returns the characters it completes. A byte that
// cannot begin or continue a valid character is returned as U+FFFD.
func (d *StreamDecoder) Push(id int32) string {
	d.pending = append(d.pending, d.lead.apply(d.t, id, d.t.render(id, false))...)
	return d.drain()
}

// Flush returns what is held back, an unfinished character, as U+FFFD, and
// empties the decoder.
func (d *StreamDecoder) Flush() string {
	if len(d.pending) == 0 {
		return ""
	}
	d.pending = d.pending[:0]
	return string(utf8.RuneError)
}

// drain returns the complete characters at the front of pending, keeping an
// incomplete one at its end.
func (d *StreamDecoder) drain() string {
	p := d.pending
	var b strings.Builder
	i, from := 0, 0 // p[from:i] is valid and not yet written
	for i < len(p) {
		if p[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(p[i:])
		if r != utf8.RuneError || n > 1 {
			i += n
			continue
		}
		if !utf8.FullRune(p[i:]) {
			break // a character later tokens may complete
		}
		b.Write(p[from:i])
		b.WriteRune(utf8.RuneError)
		i++
		from = i
	}
	if b.Len() == 0 && from == 0 && i == len(p) {
		d.pending = p[:0]
		return string(p) // the common case: all of it, valid
	}
	b.Write(p[from:i])
	d.pending = append(p[:0], p[i:]...)
	return b.String()
}

// Detokenize is llama.cpp's llama_detokenize: with removeSpecial a leading
// BOS and a trailing EOS are dropped when the model adds them; with
// unparseSpecial control and unknown tokens render as their text; with
// add_space_prefix one leading space of the first token is removed; and
// where the vocabulary asks for clean_up_tokenization_spaces (byte-level
// BPE but for the deepseek, qwen2 and other pre-tokenizers llama.cpp
// exempts; WPM) the spaces before "?!.,", around a lone "'" and before
// "'s", "'m", "'re", "'ve" are removed. That last step loses spaces the
// text had, so Decode, not Detokenize, is the inverse of Encode.
func (t *Tokenizer) Detokenize(ids []int32, removeSpecial, unparseSpecial bool) string {
	removeSpace := t.addSpacePrefix
	if removeSpecial && t.addBOS && len(ids) > 0 && ids[0] == t.bos {
		removeSpace = false
		ids = ids[1:]
	}
	if removeSpecial && t.addEOS && len(ids) > 0 && ids[len(ids)-1] == t.eos {
		ids = ids[:len(ids)-1]
	}
	var b []byte
	for _, id := range ids {
		p := t.render(id, unparseSpecial)
		if removeSpace {
			p = strings.TrimPrefix(p, " ")
			removeSpace = false
		}
		b = append(b, p...)
	}
	if t.cleanSpaces {
		b = cleanSpaces(b)
	}
	return string(b)
}

// cleanSpaces is llama.cpp's clean-up of tokenization spaces, its three
// passes over the bytes in place.
func cleanSpaces(text []byte) []byte {
	if len(text) == 0 {
		return text
	}
	// " ?", " !", " .", " ," lose the space.
	n := 1
	for i := 1; i < len(text); i++ {
		x := text[i]
		if text[i-1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',') {
			n--
		}
		text[n] = x
		n++
	}
	text = text[:n]
	// " ' " becomes "'". llama.cpp zeroes the space it skips, so the byte
	// after it does not see a space before it.
	n = 1
	for i := 1; i < len(text); i++ {
		x := text[i]
		if x == '\'' && i+1 < len(text) && text[i-1] == ' ' && text[i+1] == ' ' {
			n--
			i++
			text[i] = 0
		}
		text[n] = x
		n++
	}
	text = text[:n]
	// " 's", " 'm", " 're", " 've" lose the space; " 't", " 'd", " 'll" keep it.
	n = 1
	for i := 1; i < len(text); i++ {
		x := text[i]
		if text[i-1] == ' ' && x == '\'' && i+1 < len(text) {
			switch x1 := text[i+1]; {
			case x1 == 's' || x1 == 'm':
				n--
			case x1 == 't' || x1 == 'd':
			case i+2 < len(text):
				if x2 := text[i+2]; x1 == 'r' && x2 == 'e' || x1 == 'v' && x2 == 'e' {
					n--
				}
			}
		}
		text[n] = x
		n++
	}
	return text[:n]
}
