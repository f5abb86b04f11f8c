package model

// Special tokens: the ones llama.cpp finds by their text, the
// end-of-generation set, the per-model whitespace flags, and the splitting of
// the input around special tokens written in it.

import (
	"cmp"
	"slices"
	"strings"
)

// Special tokens llama.cpp recognises by their text when the metadata does
// not name them (llama_vocab::impl::load). Each such token is made a control
// token.
var (
	eotTexts = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
		"<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"}
	eomTexts    = []string{"<|eom_id|>"}
	fimPreTexts = []string{"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
		"▁<PRE>", "<|code_prefix|>", "<|prefix|>"}
	fimSufTexts = []string{"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
		"▁<SUF>", "<|code_suffix|>", "<|suffix|>"}
	fimMidTexts = []string{"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
		"▁<MID>", "<|code_middle|>", "<|middle|>"}
	fimPadTexts = []string{"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}
	fimRepTexts = []string{"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}
	fimSepTexts = []string{"<|file_sep|>"}
	eogTexts    = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
		"<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]",
		"[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
		"<｜end▁of▁sentence｜>", "[e~["}
	// alwaysRendered are gpt-oss tokens llama.cpp makes user-defined so that
	// they show in decoded text.
	alwaysRendered = []string{"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}
)

// detectSpecialByText fills the EOT, EOM and FIM ids the metadata left unset
// from well-known token texts. llama.cpp walks a hash map, so which of two
// candidates wins is unspecified there; here the lowest id does.
func (t *Tokenizer) detectSpecialByText() {
	for _, d := range []struct {
		dst   *int32
		texts []string
	}{
		{&t.eot, eotTexts}, {&t.eom, eomTexts},
		{&t.fimPre, fimPreTexts}, {&t.fimSuf, fimSufTexts}, {&t.fimMid, fimMidTexts},
		{&t.fimPad, fimPadTexts}, {&t.fimRep, fimRepTexts}, {&t.fimSep, fimSepTexts},
	} {
		if *d.dst >= 0 {
			continue
		}
		if id := t.lowestID(d.texts); id >= 0 {
			*d.dst = id
			t.attrs[id] |= attrControl
		}
	}
	// Control tokens whose text says "unused" are unused.
	for id, s := range t.texts {
		if t.attrs[id]&attrControl != 0 && strings.Contains(s, "unused") {
			t.attrs[id] |= attrUnused
		}
	}
}

func (t *Tokenizer) lowestID(texts []string) int32 {
	best := int32(-1)
	for _, s := range texts {
		if id := t.id(s); id >= 0 && (best < 0 || id < best) {
			best = id
		}
	}
	return best
}

// buildEOG collects the end-of-generation ids as llama.cpp's is_eog sees
// them: the FIM pad/repo/separator ids, every token with a well-known
// end-of-turn text (made control), EOS, EOT and EOM, less llama.cpp's two
// workarounds (<|end|> for o200k_harmony/solar-open, </s> for gemma4).
func (t *Tokenizer) buildEOG() {
	set := map[int32]bool{}
	for _, id := range []int32{t.fimPad, t.fimRep, t.fimSep} {
		if id >= 0 {
			set[id] = true
		}
	}
	for _, s := range eogTexts {
		if id := t.id(s); id >= 0 {
			set[id] = true
			t.attrs[id] |= attrControl
		}
	}
	for _, s := range alwaysRendered {
		if id := t.id(s); id >= 0 {
			t.attrs[id] = attrUserDefined
		}
	}
	for _, id := range []int32{t.eos, t.eot, t.eom} {
		if id >= 0 {
			set[id] = true
		}
	}
	has := func(s string) (int32, bool) {
		id := t.id(s)
		return id, id >= 0 && set[id]
	}
	_, ret := has("<|return|>")
	_, call := has("<|call|>")
	_, calls := has("<|calls|>")
	_, flush := has("<|flush|>")
	if end, ok := has("<|end|>"); ok && (ret && (call || calls) || (call || calls) && flush) {
		delete(set, end)
		t.attrs[end] = attrUserDefined
	}
	if _, ok := has("<|tool_response>"); ok {
		if s, ok := has("</s>"); ok {
			delete(set, s)
			t.attrs[s] = attrNormal
		}
	}
	t.eog = make([]int32, 0, len(set))
	for id := range set {
		t.eog = append(t.eog, id)
	}
	slices.Sort(t.eog)
}

// buildSpecialCache lists the tokens that Encode looks for in text (control,
// user-defined and unknown ones), longest text first. llama.cpp's sort is not
// stable; ties here go to the lower id.
func (t *Tokenizer) buildSpecialCache() {
	for id, a := range t.attrs {
		if a&(attrControl|attrUserDefined|attrUnknown) != 0 {
			t.special = append(t.special, int32(id))
		}
	}
	slices.SortStableFunc(t.special, func(a, b int32) int {
		return cmp.Compare(len(t.texts[b]), len(t.texts[a]))
	})
}

// setAttrsByName applies llama.cpp's per-model whitespace-stripping flags,
// chosen by tokenizer.ggml.pre, general.architecture and general.name.
func (t *Tokenizer) setAttrsByName(f *File) error {
	name, err := f.StringOr("general.name", "")
	if err != nil {
		return err
	}
	pre, err := f.StringOr(keyTokPre, "")
	if err != nil {
		return err
	}
	arch, err := f.StringOr("general.architecture", "")
	if err != nil {
		return err
	}
	name = strings.ToLower(name)
	set := func(text string, a tokenAttr, on bool) {
		if id := t.id(text); id >= 0 {
			if on {
				t.attrs[id] |= a
			} else {
				t.attrs[id] &^= a
			}
		}
	}
	containsAny := func(s string, subs ...string) bool {
		return slices.ContainsFunc(subs, func(sub string) bool { return strings.Contains(s, sub) })
	}
	switch {
	case containsAny(pre, "jina-v2-de", "jina-v2-es", "jina-v2-code") || containsAny(arch, "nomic-bert-moe", "jina-bert-v3"):
		set("<mask>", attrLStrip, true)
	case containsAny(name, "phi-3", "phi3"):
		for _, id := range t.special {
			t.attrs[id] |= attrRStrip
		}
		set("</s>", attrRStrip, true)
		for _, s := range []string{"<unk>", "<s>", "<|endoftext|>"} {
			set(s, attrRStrip, false)
		}
	case containsAny(name, "modern-bert"):
		set("[MASK]", attrLStrip, true)
	}
	return nil
}

// cSpace reports whether C's isspace holds for b in the C locale.
func cSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\v' || b == '\f' || b == '\r'
}

// partition splits text around the special tokens written in it, as
// llama.cpp's tokenizer_st_partition: each candidate in turn, longest first,
// is cut out of every plain-text run (leftmost match first), eating the
// whitespace beside it when the token is marked to. Without parseSpecial only
// user-defined tokens are candidates.
func (t *Tokenizer) partition(text string, parseSpecial bool) []fragment {
	if text == "" {
		return nil
	}
	frags := []fragment{{text: text, id: -1}}
	var next []fragment
	for _, id := range t.special {
		a := t.attrs[id]
		if !parseSpecial && a&attrSpecial != 0 {
			continue
		}
		tok := t.texts[id]
		next = next[:0]
		for _, fr := range frags {
			if fr.id >= 0 {
				next = append(next, fr)
				continue
			}
			rest := fr.text
			for rest != "" {
				i := strings.Index(rest, tok)
				if i < 0 {
					break
				}
				left := rest[:i]
				if a&attrLStrip != 0 {
					for left != "" && cSpace(left[len(left)-1]) {
						left = left[:len(left)-1]
					}
				}
				if left != "" {
					next = append(next, fragment{text: left, id: -1})
				}
				next = append(next, fragment{id: id})
				rest = rest[i+len(tok):]
				if a&attrRStrip != 0 {
					for rest != "" && cSpace(rest[0]) {
						rest = rest[1:]
					}
				}
			}
			if rest != "" {
				next = append(next, fragment{text: rest, id: -1})
			}
		}
		frags, next = next, frags
	}
	return frags
}
