package model

// The tokenizer layer: the vocabulary every family shares (token texts,
// scores, types, special tokens, the end-of-generation set), the splitting of
// the input around special tokens, and the dispatch to one family's encoder.
// A family (SPM in tokenizer_spm.go, byte-level BPE in tokenizer_bpe.go with
// its pre-tokenizers in tokenizer_pretok.go, WPM in tokenizer_wpm.go) is one
// more file: its settings, its encoder of plain text and its rendering of a
// normal token. tokenizer_unicode.go holds the Unicode tables they share.
//
// The behaviour follows llama.cpp's llama_vocab (src/llama-vocab.cpp) so that
// a prompt gives here the ids it gives there.

import (
	"errors"
	"fmt"
	"slices"
)

// ErrUnsupportedTokenizer is wrapped when tokenizer.ggml.model names a
// family that llama.cpp knows but edged does not implement yet.
var ErrUnsupportedTokenizer = errors.New("tokenizer family not supported yet")

// ErrUnknownTokenizer is wrapped when tokenizer.ggml.model names no family
// llama.cpp knows.
var ErrUnknownTokenizer = errors.New("unknown tokenizer family")

// TokenType is llama.cpp's llama_token_type, the value stored per token in
// tokenizer.ggml.token_type.
type TokenType int32

// Token types, with llama.cpp's numbers.
const (
	TokenUndefined   TokenType = 0
	TokenNormal      TokenType = 1
	TokenUnknown     TokenType = 2
	TokenControl     TokenType = 3
	TokenUserDefined TokenType = 4
	TokenUnused      TokenType = 5
	TokenByte        TokenType = 6
)

// tokenAttr is llama.cpp's llama_token_attr: a token's type as a bit set,
// plus the whitespace-stripping flags some families set on special tokens.
type tokenAttr uint16

const (
	attrUnknown tokenAttr = 1 << iota
	attrUnused
	attrNormal
	attrControl
	attrUserDefined
	attrByte
	attrLStrip // eat whitespace before the token when matching it in text
	attrRStrip // eat whitespace after it

	// attrSpecial tokens render as nothing unless special rendering is
	// asked for, and are matched in text only when parseSpecial is set.
	attrSpecial = attrUnknown | attrControl
)

func attrOfType(t TokenType) tokenAttr {
	switch t {
	case TokenNormal:
		return attrNormal
	case TokenUnknown:
		return attrUnknown
	case TokenControl:
		return attrControl
	case TokenUserDefined:
		return attrUserDefined
	case TokenUnused:
		return attrUnused
	case TokenByte:
		return attrByte
	}
	return 0 // undefined: rendered as nothing, never matched
}

// Metadata keys (llama.cpp's LLM_KV_TOKENIZER_*; "seperator" is spelled as
// llama.cpp spells it).
const (
	keyTokModel       = "tokenizer.ggml.model"
	keyTokPre         = "tokenizer.ggml.pre"
	keyTokTokens      = "tokenizer.ggml.tokens"
	keyTokScores      = "tokenizer.ggml.scores"
	keyTokTypes       = "tokenizer.ggml.token_type"
	keyTokAddBOS      = "tokenizer.ggml.add_bos_token"
	keyTokAddEOS      = "tokenizer.ggml.add_eos_token"
	keyTokAddSEP      = "tokenizer.ggml.add_sep_token"
	keyTokSpacePrefix = "tokenizer.ggml.add_space_prefix"
	keyTokRemoveExtra = "tokenizer.ggml.remove_extra_whitespaces"
)

// tokSettings are a family's defaults, overridden by the file's metadata.
type tokSettings struct {
	bos, eos, unk, sep, pad, mask int32 // -1: none

	addSpacePrefix bool // SPM: a space before the first text run and after each special token
	addBOS, addEOS bool // when Encode is asked to add special tokens
	// addSEP: WPM ends an encoding with SEP instead of EOS; the BPE
	// families that set it (roberta-bpe, jina-v1-en) leave it to callers
	// that join two texts, as llama.cpp does.
	addSEP bool
	// removeExtraWhitespaces is read and kept; llama.cpp applies it only in
	// its UGM (T5) normalizer, never for SPM, and neither does edged.
	removeExtraWhitespaces bool
	// cleanSpaces is clean_up_tokenization_spaces: llama.cpp's
	// detokenizer removes the space before "?!.," and some contractions.
	// Only Detokenize applies it; Decode gives back what Encode was given.
	cleanSpaces bool
}

// family is one tokenizer.ggml.model algorithm over the shared vocabulary.
type family interface {
	// encode appends the ids of text, a run of the input that holds no
	// special token. afterSpecial reports whether the run starts the input
	// or follows a special token.
	encode(out []int32, text string, afterSpecial bool) []int32
	// appendPiece appends the bytes a token that is neither special nor
	// user-defined stands for, given its text and attributes.
	appendPiece(dst []byte, text string, a tokenAttr) []byte
}

// ending is what Encode appends after the text when asked to add special
// tokens.
type ending int

const (
	endEOS ending = iota // EOS, when add_eos_token (SPM, BPE)
	endSEP               // SEP, when add_sep_token (WPM)
)

// familySpec is what NewTokenizer knows about a family before it reads the
// vocabulary: its name, defaults, and how to build it over the vocabulary.
type familySpec struct {
	name     string // "SPM", "BPE", "WPM"
	defaults tokSettings
	build    func(f *File, v *vocab, s *tokSettings) (family, error)
	// spacePrefix: Encode honours add_space_prefix, so Decode removes the
	// space it added (SPM only; llama.cpp's other families ignore the flag
	// when encoding).
	spacePrefix bool
	endsWith    ending
}

// familyOf maps tokenizer.ggml.model to its family. Adding a family is a
// case here and a file holding its spec.
func familyOf(model string) (familySpec, error) {
	switch model {
	case "llama":
		return spmSpec(), nil
	case "gpt2":
		return bpeSpec(), nil
	case "bert":
		return wpmSpec(), nil
	case "t5", "rwkv", "plamo2", "gemma4", "hybriddna", "whitespace", "no_vocab", "none":
		return familySpec{}, fmt.Errorf("%w: %s %q", ErrUnsupportedTokenizer, keyTokModel, model)
	}
	return familySpec{}, fmt.Errorf("%w: %s %q", ErrUnknownTokenizer, keyTokModel, model)
}

// vocab is the table every family reads: id -> text, score, attributes, and
// text -> id.
type vocab struct {
	texts  []string
	scores []float32
	attrs  []tokenAttr
	ids    map[string]int32
	maxLen int // longest token text in bytes
}

// id returns the id of a token text, or -1.
func (v *vocab) id(text string) int32 {
	if id, ok := v.ids[text]; ok {
		return id
	}
	return -1
}

// Tokenizer turns text into token ids and back, as llama.cpp does for the
// same GGUF vocabulary. It is immutable after NewTokenizer and safe for
// concurrent use.
type Tokenizer struct {
	vocab
	tokSettings

	model string // tokenizer.ggml.model
	fam   family
	// stripLead: Decode removes the space add_space_prefix put before the text.
	stripLead bool
	endsWith  ending

	eot, eom                                       int32
	fimPre, fimSuf, fimMid, fimPad, fimRep, fimSep int32
	eog                                            []int32 // end-of-generation ids, ascending

	special []int32      // candidates for matching in text, longest text first
	trie    *specialTrie // finds them
	pieces  []string     // what each token renders as, special tokens as their text
}

// NewTokenizer reads the tokenizer.ggml.* metadata of f. It needs no tensors,
// so vocabulary-only files work. An unknown tokenizer.ggml.model gives an
// error wrapping ErrUnknownTokenizer; a known family not implemented yet,
// one wrapping ErrUnsupportedTokenizer.
func NewTokenizer(f *File) (*Tokenizer, error) {
	model, err := f.String(keyTokModel)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	spec, err := familyOf(model)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t := &Tokenizer{model: model, tokSettings: spec.defaults}
	if err := t.load(f, spec); err != nil {
		return nil, fmt.Errorf("tokenizer %s (%s): %w", model, spec.name, err)
	}
	return t, nil
}

func (t *Tokenizer) load(f *File, spec familySpec) error {
	var err error
	if t.addSpacePrefix, err = f.BoolOr(keyTokSpacePrefix, t.addSpacePrefix); err != nil {
		return err
	}
	if t.removeExtraWhitespaces, err = f.BoolOr(keyTokRemoveExtra, t.removeExtraWhitespaces); err != nil {
		return err
	}
	if err := t.loadVocab(f); err != nil {
		return err
	}
	if t.fam, err = spec.build(f, &t.vocab, &t.tokSettings); err != nil {
		return err
	}
	t.endsWith = spec.endsWith
	if err := t.loadSpecialIDs(f); err != nil {
		return err
	}
	t.stripLead = spec.spacePrefix && t.addSpacePrefix
	t.detectSpecialByText()
	t.buildEOG()
	t.buildSpecialCache()
	t.buildPieces()
	return t.setAttrsByName(f)
}

// loadVocab reads the token texts, scores and types, as llama.cpp does:
// scores may be float32 or int32 and default to 0, types default to normal,
// an empty text becomes "[EMPTY_<id>]", and a duplicate text is an error.
func (t *Tokenizer) loadVocab(f *File) error {
	texts, err := Array[string](f, keyTokTokens)
	if err != nil {
		return err
	}
	n := len(texts)
	if n == 0 {
		return fmt.Errorf("%s is empty", keyTokTokens)
	}
	if int64(n) > 1<<31-1 {
		return fmt.Errorf("%s: %d tokens do not fit int32 ids", keyTokTokens, n)
	}
	scores := make([]float32, n)
	if v, ok := f.Meta(keyTokScores); ok {
		switch s := v.(type) {
		case []float32:
			if len(s) < n {
				return fmt.Errorf("%s: %d scores for %d tokens", keyTokScores, len(s), n)
			}
			copy(scores, s)
		case []int32:
			if len(s) < n {
				return fmt.Errorf("%s: %d scores for %d tokens", keyTokScores, len(s), n)
			}
			for i := range scores {
				scores[i] = float32(s[i])
			}
		default:
			return fmt.Errorf("%s: got %T, want []float32 or []int32", keyTokScores, v)
		}
	}
	attrs := make([]tokenAttr, n)
	if _, ok := f.Meta(keyTokTypes); ok {
		types, err := Array[int32](f, keyTokTypes)
		if err != nil {
			return err
		}
		if len(types) < n {
			return fmt.Errorf("%s: %d types for %d tokens", keyTokTypes, len(types), n)
		}
		for i := range attrs {
			attrs[i] = attrOfType(TokenType(types[i]))
		}
	} else {
		for i := range attrs {
			attrs[i] = attrNormal
		}
	}
	v := vocab{texts: make([]string, n), scores: scores, attrs: attrs, ids: make(map[string]int32, n)}
	for i, s := range texts {
		if s == "" {
			s = fmt.Sprintf("[EMPTY_%d]", i)
		}
		v.texts[i] = s
		before := len(v.ids)
		v.ids[s] = int32(i)
		if len(v.ids) == before { // a duplicate; checked so, the map is hashed once per token
			j := slices.Index(v.texts, s)
			return fmt.Errorf("%s: duplicate token %q has ids %d and %d", keyTokTokens, s, j, i)
		}
		v.maxLen = max(v.maxLen, len(s))
	}
	t.vocab = v
	return nil
}

// loadSpecialIDs applies the special-token ids and add_* flags of the
// metadata over the family defaults. An id outside the vocabulary keeps the
// default (llama.cpp warns "bad special token" and does the same); a default
// outside the vocabulary becomes none.
func (t *Tokenizer) loadSpecialIDs(f *File) error {
	t.eot, t.eom = -1, -1
	t.fimPre, t.fimSuf, t.fimMid, t.fimPad, t.fimRep, t.fimSep = -1, -1, -1, -1, -1, -1
	ids := []struct {
		key string
		dst *int32
	}{
		{"tokenizer.ggml.bos_token_id", &t.bos},
		{"tokenizer.ggml.eos_token_id", &t.eos},
		{"tokenizer.ggml.eot_token_id", &t.eot},
		{"tokenizer.ggml.eom_token_id", &t.eom},
		{"tokenizer.ggml.unknown_token_id", &t.unk},
		{"tokenizer.ggml.seperator_token_id", &t.sep},
		{"tokenizer.ggml.padding_token_id", &t.pad},
		{"tokenizer.ggml.mask_token_id", &t.mask},
		{"tokenizer.ggml.fim_pre_token_id", &t.fimPre},
		{"tokenizer.ggml.fim_suf_token_id", &t.fimSuf},
		{"tokenizer.ggml.fim_mid_token_id", &t.fimMid},
		{"tokenizer.ggml.fim_pad_token_id", &t.fimPad},
		{"tokenizer.ggml.fim_rep_token_id", &t.fimRep},
		{"tokenizer.ggml.fim_sep_token_id", &t.fimSep},
		// deprecated spellings of the FIM ids
		{"tokenizer.ggml.prefix_token_id", &t.fimPre},
		{"tokenizer.ggml.suffix_token_id", &t.fimSuf},
		{"tokenizer.ggml.middle_token_id", &t.fimMid},
	}
	n := int64(len(t.texts))
	for _, s := range ids {
		if int64(*s.dst) >= n {
			*s.dst = -1
		}
		v, err := f.Int(s.key)
		if errors.Is(err, ErrMissingKey) {
			continue
		}
		if err != nil {
			return err
		}
		if v >= 0 && v < n {
			*s.dst = int32(v)
		}
	}
	// A flag the family acts on needs its token.
	flags := []struct {
		key  string
		dst  *bool
		id   int32
		idk  string
		used bool
	}{
		{keyTokAddBOS, &t.addBOS, t.bos, "tokenizer.ggml.bos_token_id", true},
		{keyTokAddEOS, &t.addEOS, t.eos, "tokenizer.ggml.eos_token_id", t.endsWith == endEOS},
		{keyTokAddSEP, &t.addSEP, t.sep, "tokenizer.ggml.seperator_token_id", t.endsWith == endSEP},
	}
	for _, fl := range flags {
		v, err := f.BoolOr(fl.key, *fl.dst)
		if err != nil {
			return err
		}
		*fl.dst = v
		if v && fl.used && fl.id < 0 {
			return fmt.Errorf("%s is true, but %s is not set", fl.key, fl.idk)
		}
	}
	return nil
}

// NVocab is the number of tokens in the vocabulary.
func (t *Tokenizer) NVocab() int { return len(t.texts) }

// BOS is the beginning-of-sequence id, or -1 when the vocabulary has none.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS is the end-of-sequence id, or -1 when the vocabulary has none.
func (t *Tokenizer) EOS() int32 { return t.eos }

// IsEOG reports whether id ends generation (llama_vocab::is_eog): EOS, EOT
// (tokenizer.ggml.eot_token_id or a well-known end-of-turn text), EOM, the
// FIM pad/repo/separator tokens and the other end-of-turn tokens llama.cpp
// recognises by text.
func (t *Tokenizer) IsEOG(id int32) bool {
	_, ok := slices.BinarySearch(t.eog, id)
	return ok
}

// fragment is a run of the input: plain text when id < 0, else a special
// token found in it.
type fragment struct {
	text string
	id   int32
}

// Encode turns text into token ids. With addSpecial the family's framing
// is added: BOS (per tokenizer.ggml.add_bos_token) before, and EOS (per
// add_eos_token; SEP per add_sep_token for WPM) after. With parseSpecial
// control tokens written in the text ("<s>") become their ids.
// User-defined tokens are matched in the text either way, as in llama.cpp.
func (t *Tokenizer) Encode(text string, addSpecial, parseSpecial bool) []int32 {
	var out []int32
	if addSpecial && t.addBOS {
		out = append(out, t.bos)
	}
	afterSpecial := true
	for _, fr := range t.partition(text, parseSpecial) {
		if fr.id >= 0 {
			out = append(out, fr.id)
			afterSpecial = true
			continue
		}
		out = t.fam.encode(out, fr.text, afterSpecial)
		afterSpecial = false
	}
	if addSpecial {
		switch {
		case t.endsWith == endEOS && t.addEOS:
			out = append(out, t.eos)
		case t.endsWith == endSEP && t.addSEP:
			out = append(out, t.sep)
		}
	}
	return out
}
