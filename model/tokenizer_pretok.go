package model

// Pre-tokenizers of the byte-level BPE family: the split of a text into
// words before merging, chosen by tokenizer.ggml.pre, as llama.cpp's
// unicode_regex_split does it.
//
// llama.cpp lists, per pre-tokenizer type, regular expressions applied in
// turn: each one cuts every piece left by the one before into its matches
// and the text between them (which stays a piece too). For the GPT-2 and
// Llama-3 expressions it runs hand-written splitters; the others go through
// std::regex on a "collapsed" copy of the text (each code point of 128 and
// above replaced by one byte naming its category, non-ASCII whitespace by
// \v), or, when an expression names no Unicode category, through
// std::wregex with non-ASCII whitespace replaced by \v. Go's regexp has no
// look-ahead, so every expression is implemented here by hand, each stage
// written to give exactly the pieces llama.cpp's way of running it gives.
// In particular:
//
//   - \s is White_Space (ASCII tab to carriage return and space, plus the
//     non-ASCII whitespace that llama.cpp collapses to \v);
//   - \p{L}, \p{N}, \p{P} are the general categories;
//   - a literal character class of the wregex expressions is tested against
//     the code point, except that non-ASCII whitespace is \v there and so
//     matches no literal range (U+3000 is not in deepseek-llm's "　-。").

import (
	"fmt"
	"slices"
	"unicode/utf8"
)

// cptText is a text as code points and their flags.
type cptText struct {
	r []rune
	f []cptFlags
}

// flagsAt returns the flags at i, or none past hi (llama.cpp's splitters
// see nothing beyond the piece they cut).
func (t *cptText) flagsAt(i, hi int) cptFlags {
	if i < hi {
		return t.f[i]
	}
	return 0
}

// runeAt returns the code point at i, or -1 past hi.
func (t *cptText) runeAt(i, hi int) rune {
	if i < hi {
		return t.r[i]
	}
	return -1
}

// preStage cuts the piece [lo, hi) of a text, appending the end of each of
// its pieces to ends.
type preStage interface {
	split(t *cptText, lo, hi int, ends []int32) []int32
}

// preTokenizer is one tokenizer.ggml.pre type: its stages, applied in turn.
type preTokenizer struct {
	name   string
	stages []preStage
}

// split returns the ends of the words of t, code point offsets in
// ascending order; buf is scratch space it may use.
func (p *preTokenizer) split(t *cptText, ends, buf []int32) (words, scratch []int32) {
	ends = append(ends[:0], int32(len(t.r)))
	for _, st := range p.stages {
		buf = buf[:0]
		lo := 0
		for _, e := range ends {
			if int(e) > lo {
				buf = st.split(t, lo, int(e), buf)
			}
			lo = int(e)
		}
		ends, buf = buf, ends
	}
	return ends, buf
}

// preSpec is what a tokenizer.ggml.pre value selects: the pre-tokenizer and
// the settings llama.cpp changes with it.
type preSpec struct {
	pre          preTokenizer
	ignoreMerges bool // a word that is a token is that token, unmerged
	addBOS       bool // add_bos defaults to true
	noBOS        bool // no default BOS id
	addSEP       bool
	keepSpaces   bool // clean_up_tokenization_spaces is off
}

// Pre-tokenizer types llama.cpp knows but edged does not implement yet.
var unimplementedPre = []string{
	"deepseek-v3", "hunyuan-dense", "poro-chat", "viking", "tekken", "bloom", "gpt3-finnish",
	"chameleon", "gpt-4o", "llama4", "superbpe", "bailingmoe", "bailingmoe2", "llada-moe",
	"seed-coder", "kimi-k2", "afmoe", "minimax-m2",
}

// preSpecOf maps tokenizer.ggml.pre to its pre-tokenizer, with llama.cpp's
// names (llama_vocab::impl::load). An empty name is "default", as in
// llama.cpp (which warns that quality suffers). "gpt-neox" is edged's own
// alias: llama.cpp's converter writes GPT-NeoX vocabularies as "mpt", whose
// expression is GPT-2's.
func preSpecOf(name string) (preSpec, error) {
	var p preSpec
	stages := func(kind string, st ...preStage) {
		p.pre = preTokenizer{name: kind, stages: st}
	}
	switch name {
	case "", "default":
		stages("default", stageDefaultPunct, stageGPT2{}, stageNumbers, stage3Digits)
	case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2":
		stages("llama3", stageLlama3{maxDigits: 3})
		p.ignoreMerges, p.addBOS = true, true
	case "dbrx", "smaug-bpe":
		stages("llama3", stageLlama3{maxDigits: 3})
	case "glm4", "chatglm-bpe":
		stages("llama3", stageLlama3{maxDigits: 3})
		p.noBOS = true
	case "deepseek-llm":
		stages("deepseek-llm", stageNewline, stageDeepseekLetters, stageDeepseekPunct, stageTrailingSpace,
			stageCJK, stageNumbers)
		p.keepSpaces = true
	case "deepseek-coder":
		stages("deepseek-coder", stageNewline, stageSpaceLetters, stageSpacePunct, stageCJK, stageDigit)
		p.keepSpaces = true
	case "falcon":
		stages("falcon", stageFalconPunct, stageGPT2{}, stage3Digits)
	case "gpt-2", "gpt-neox", "mpt", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
		"a.x-4.0", "mellum", "modern-bert", "olmo", "jais", "exaone4":
		stages("gpt2", stageGPT2{})
	case "jina-v1-en", "jina-v2-code", "roberta-bpe":
		stages("gpt2", stageGPT2{})
		p.addSEP = true
	case "trillion", "granite-docling":
		stages("gpt2", stageGPT2{})
		p.keepSpaces = true
	case "starcoder", "refact", "codeshell", "exaone", "minerva-7b":
		stages("starcoder", stageDigit, stageGPT2{})
	case "command-r", "smollm":
		stages("starcoder", stageDigit, stageGPT2{})
		p.keepSpaces = true
	case "qwen2", "deepseek-r1-qwen", "kormo", "hunyuan", "grok-2":
		stages("qwen2", stageLlama3{maxDigits: 1})
		p.keepSpaces = true
	case "stablelm2", "megrez":
		stages("qwen2", stageLlama3{maxDigits: 1})
	default:
		if slices.Contains(unimplementedPre, name) {
			return p, fmt.Errorf("%w: %s %q", ErrUnsupportedTokenizer, keyTokPre, name)
		}
		return p, fmt.Errorf("%w: unknown pre-tokenizer type %s %q", ErrUnknownTokenizer, keyTokPre, name)
	}
	return p, nil
}

// stageGPT2 is GPT-2's expression, llama.cpp's unicode_regex_split_custom_gpt2:
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
type stageGPT2 struct{}

func (stageGPT2) split(t *cptText, lo, hi int, ends []int32) []int32 {
	const other = cfSpace | cfLetter | cfNumber
	for pos := lo; pos < hi; {
		r, f := t.r[pos], t.f[pos]
		if n := contraction(t, pos, hi, false); n > 0 {
			pos += n
			ends = append(ends, int32(pos))
			continue
		}
		f2 := f
		if r == ' ' {
			f2 = t.flagsAt(pos+1, hi)
		}
		switch {
		case f2&cfLetter != 0, f2&cfNumber != 0:
			class := f2 & (cfLetter | cfNumber)
			if r == ' ' {
				pos++
			}
			for t.flagsAt(pos, hi)&class != 0 {
				pos++
			}
		case f2&other == 0 && f2 != 0:
			if r == ' ' {
				pos++
			}
			for g := t.flagsAt(pos, hi); g&other == 0 && g != 0; g = t.flagsAt(pos, hi) {
				pos++
			}
		default:
			n := 0
			for t.flagsAt(pos+n, hi)&cfSpace != 0 {
				n++
			}
			switch {
			case n > 1 && pos+n < hi: // \s+(?!\S): leave the last space to the next word
				pos += n - 1
			case n > 0:
				pos += n
			default:
				pos++
			}
		}
		ends = append(ends, int32(pos))
	}
	return ends
}

// contraction returns the length of 's 't 'm 'd 're 've 'll at pos, or 0;
// fold makes the letters case-insensitive.
func contraction(t *cptText, pos, hi int, fold bool) int {
	if t.r[pos] != '\'' || pos+1 >= hi {
		return 0
	}
	low := func(r rune) rune {
		if fold {
			return cptLower(r)
		}
		return r
	}
	switch low(t.r[pos+1]) {
	case 's', 't', 'm', 'd':
		return 2
	}
	if pos+2 >= hi {
		return 0
	}
	switch a, b := low(t.r[pos+1]), low(t.r[pos+2]); {
	case a == 'r' && b == 'e', a == 'v' && b == 'e', a == 'l' && b == 'l':
		return 3
	}
	return 0
}

// stageLlama3 is Llama 3's expression with maxDigits 3, llama.cpp's
// unicode_regex_split_custom_llama3:
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// With maxDigits 1 it is Qwen2's expression (\p{N} for \p{N}{1,3}), which
// llama.cpp runs through std::regex; every alternative then matches what the
// same alternative of the Llama 3 splitter matches, checked alternative by
// alternative (the contractions are ASCII-only there, and no non-ASCII code
// point lower-cases to one of their letters).
type stageLlama3 struct{ maxDigits int }

func (s stageLlama3) split(t *cptText, lo, hi int, ends []int32) []int32 {
	const other = cfSpace | cfLetter | cfNumber
	isNL := func(r rune) bool { return r == '\r' || r == '\n' }
	for pos := lo; pos < hi; {
		r, f := t.r[pos], t.f[pos]
		if n := contraction(t, pos, hi, true); n > 0 {
			pos += n
			ends = append(ends, int32(pos))
			continue
		}
		// [^\r\n\p{L}\p{N}]?\p{L}+
		if !isNL(r) && f&cfNumber == 0 && (f&cfLetter != 0 || t.flagsAt(pos+1, hi)&cfLetter != 0) {
			pos++
			for t.flagsAt(pos, hi)&cfLetter != 0 {
				pos++
			}
			ends = append(ends, int32(pos))
			continue
		}
		// \p{N}{1,maxDigits}
		if f&cfNumber != 0 {
			start := pos
			for t.flagsAt(pos, hi)&cfNumber != 0 {
				pos++
				if pos-start >= s.maxDigits {
					ends = append(ends, int32(pos))
					start = pos
				}
			}
			if pos > start {
				ends = append(ends, int32(pos))
			}
			continue
		}
		// ' '?[^\s\p{L}\p{N}]+[\r\n]*
		f2 := f
		if r == ' ' {
			f2 = t.flagsAt(pos+1, hi)
		}
		if f2&other == 0 {
			if r == ' ' {
				pos++
			}
			for g := t.flagsAt(pos, hi); g&other == 0 && g != 0; g = t.flagsAt(pos, hi) {
				pos++
			}
			for isNL(t.runeAt(pos, hi)) {
				pos++
			}
			ends = append(ends, int32(pos))
			continue
		}
		n, lastNL := 0, 0
		for t.flagsAt(pos+n, hi)&cfSpace != 0 {
			if isNL(t.r[pos+n]) {
				lastNL = pos + n + 1
			}
			n++
		}
		switch {
		case lastNL > 0: // \s*[\r\n]+
			pos = lastNL
		case n > 1 && pos+n < hi: // \s+(?!\S)
			pos += n - 1
		case n > 0: // \s+
			pos += n
		default:
			pos++
		}
		ends = append(ends, int32(pos))
	}
	return ends
}

// stageMatch cuts a piece as std::regex_iterator does for an expression
// without alternation: the leftmost match, then the next one after it, the
// text between matches kept as pieces. match returns the end of the match
// that starts at pos, or -1.
type stageMatch struct {
	match func(t *cptText, pos, hi int) int
}

func (s stageMatch) split(t *cptText, lo, hi int, ends []int32) []int32 {
	last := lo
	for pos := lo; pos < hi; {
		e := s.match(t, pos, hi)
		if e < 0 {
			pos++
			continue
		}
		if pos > last {
			ends = append(ends, int32(pos))
		}
		ends = append(ends, int32(e))
		last, pos = e, e
	}
	if last < hi {
		ends = append(ends, int32(hi))
	}
	return ends
}

// class tells whether a code point with its flags belongs to a set.
type class func(r rune, f cptFlags) bool

// run matches class+.
func run(c class) stageMatch {
	return stageMatch{func(t *cptText, pos, hi int) int {
		if !c(t.r[pos], t.f[pos]) {
			return -1
		}
		for pos++; pos < hi && c(t.r[pos], t.f[pos]); pos++ {
		}
		return pos
	}}
}

// spaceRun matches \s?class+.
func spaceRun(c class) stageMatch {
	r := run(c)
	return stageMatch{func(t *cptText, pos, hi int) int {
		if t.f[pos]&cfSpace != 0 && pos+1 < hi && c(t.r[pos+1], t.f[pos+1]) {
			return r.match(t, pos+1, hi)
		}
		return r.match(t, pos, hi)
	}}
}

// repeat matches exactly n of class.
func repeat(c class, n int) stageMatch {
	return stageMatch{func(t *cptText, pos, hi int) int {
		if pos+n > hi {
			return -1
		}
		for i := pos; i < pos+n; i++ {
			if !c(t.r[i], t.f[i]) {
				return -1
			}
		}
		return pos + n
	}}
}

func flagClass(mask cptFlags) class {
	return func(_ rune, f cptFlags) bool { return f&mask != 0 }
}

// wide is the code point a std::wregex expression sees: non-ASCII
// whitespace is \v.
func wide(r rune, f cptFlags) rune {
	if r >= utf8.RuneSelf && f&cfSpace != 0 {
		return '\v'
	}
	return r
}

// literal is a wregex character class written as ranges ("a-zµ"): r is in
// it when wide(r) is.
func literal(spec string) class {
	type span struct{ lo, hi rune }
	var spans []span
	rs := []rune(spec)
	for i := 0; i < len(rs); i++ {
		s := span{rs[i], rs[i]}
		if i+2 < len(rs) && rs[i+1] == '-' {
			s.hi = rs[i+2]
			i += 2
		}
		spans = append(spans, s)
	}
	slices.SortFunc(spans, func(a, b span) int { return int(a.lo - b.lo) })
	merged := spans[:0]
	for _, s := range spans {
		if n := len(merged); n > 0 && s.lo <= merged[n-1].hi+1 {
			merged[n-1].hi = max(merged[n-1].hi, s.hi)
			continue
		}
		merged = append(merged, s)
	}
	spans = merged
	// A bitmap answers for the Basic Multilingual Plane, a search above it.
	var bmp [0x10000 / 64]uint64
	for _, s := range spans {
		for r := s.lo; r <= min(s.hi, 0xFFFF); r++ {
			bmp[r>>6] |= 1 << (r & 63)
		}
	}
	return func(r rune, f cptFlags) bool {
		w := wide(r, f)
		if w <= 0xFFFF {
			return bmp[w>>6]&(1<<(w&63)) != 0
		}
		i, _ := slices.BinarySearchFunc(spans, w, func(s span, w rune) int {
			switch {
			case s.hi < w:
				return -1
			case s.lo > w:
				return 1
			}
			return 0
		})
		return i < len(spans) && spans[i].lo <= w && w <= spans[i].hi
	}
}

// The stages of llama.cpp's expressions, named after what they match.
var (
	// [\p{P}\$\+<=>\^~\|]+
	stageDefaultPunct = run(func(r rune, f cptFlags) bool {
		return f&cfPunct != 0 || r == '$' || r == '+' || r == '<' || r == '=' || r == '>' || r == '^' || r == '~' || r == '|'
	})
	// [\p{P}\$\+<=>\^~\|`]+
	stageFalconPunct = run(func(r rune, f cptFlags) bool {
		return f&cfPunct != 0 || r == '$' || r == '+' || r == '<' || r == '=' || r == '>' || r == '^' || r == '~' || r == '|' || r == '`'
	})
	// \p{N}+
	stageNumbers = run(flagClass(cfNumber))
	// \p{N}
	stageDigit = repeat(flagClass(cfNumber), 1)
	// [0-9][0-9][0-9]
	stage3Digits = repeat(func(r rune, _ cptFlags) bool { return '0' <= r && r <= '9' }, 3)
	// [\r\n]
	stageNewline = repeat(func(r rune, _ cptFlags) bool { return r == '\r' || r == '\n' }, 1)
	// \s?\p{L}+
	stageSpaceLetters = spaceRun(flagClass(cfLetter))
	// \s?\p{P}+
	stageSpacePunct = spaceRun(flagClass(cfPunct))
	// [一-龥ࠀ-一가-퟿]+
	stageCJK = run(literal("\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF"))
	// DeepSeek LLM's cased letters, \s?[A-Za-zµÀ-Ö...]+
	stageDeepseekLetters = spaceRun(literal(
		"A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\U00010400-\U0001044F\U000104B0-\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2\U00010CC0-\U00010CF2\U000118A0-\U000118DF\U0001E900-\U0001E943"))
	// \s?[!-/:-~！-／：-～‘-‟　-。]+
	stageDeepseekPunct = spaceRun(literal("!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002"))
	// \s+$
	stageTrailingSpace preStage = trailingSpace{}
)

// trailingSpace is \s+$: the whitespace that ends the piece.
type trailingSpace struct{}

func (trailingSpace) split(t *cptText, lo, hi int, ends []int32) []int32 {
	start := hi
	for start > lo && t.f[start-1]&cfSpace != 0 {
		start--
	}
	if start > lo && start < hi {
		ends = append(ends, int32(start))
	}
	return append(ends, int32(hi))
}
