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
	t.trie = newSpecialTrie(t.texts, t.special)
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
// is cut out of every plain-text run (leftmost match first, the search
// going on after the match), eating the whitespace beside it when the token
// is marked to. Without parseSpecial only user-defined tokens are
// candidates.
//
// llama.cpp searches the text once per candidate, which costs
// O(text × candidates) (deepseek's vocabularies have 2400 user-defined
// "[PAD…]" tokens). Here one pass over the text with a trie of the
// candidates finds every place a candidate is written; the candidates are
// then taken in llama.cpp's order, each place accepted when none of its
// bytes is taken yet (it lies inside one plain-text run then) and it does
// not overlap the candidate's previous accepted place.
func (t *Tokenizer) partition(text string, parseSpecial bool) []fragment {
	if text == "" {
		return nil
	}
	found := t.trie.find(text, func(rank int32) bool {
		return parseSpecial || t.attrs[t.special[rank]]&attrSpecial == 0
	})
	if len(found) == 0 {
		return []fragment{{text: text, id: -1}}
	}
	ranks := make([]int32, 0, len(found))
	for r := range found {
		ranks = append(ranks, r)
	}
	slices.Sort(ranks)

	const (
		free  = 0
		taken = 1 // part of a token, or whitespace a token ate
		start = 2 // the first byte of a token
	)
	state := make([]byte, len(text))
	tokenAt := map[int]int32{}
	for _, r := range ranks {
		id := t.special[r]
		n, a := len(t.texts[id]), t.attrs[id]
		after := 0 // where the search for this token goes on
	places:
		for _, p := range found[r] {
			if p < after {
				continue
			}
			for i := p; i < p+n; i++ {
				if state[i] != free {
					continue places
				}
			}
			state[p] = start
			for i := p + 1; i < p+n; i++ {
				state[i] = taken
			}
			tokenAt[p] = id
			after = p + n
			if a&attrLStrip != 0 {
				for i := p - 1; i >= 0 && state[i] == free && cSpace(text[i]); i-- {
					state[i] = taken
				}
			}
			if a&attrRStrip != 0 {
				for ; after < len(text) && state[after] == free && cSpace(text[after]); after++ {
					state[after] = taken
				}
			}
		}
	}

	var frags []fragment
	for i := 0; i < len(text); {
		switch state[i] {
		case free:
			j := i + 1
			for j < len(text) && state[j] == free {
				j++
			}
			frags = append(frags, fragment{text: text[i:j], id: -1})
			i = j
		case start:
			frags = append(frags, fragment{id: tokenAt[i]})
			i++
		default:
			i++
		}
	}
	return frags
}

// specialTrie finds where special tokens are written in a text: a trie of
// their texts, each node knowing the token that ends there.
type specialTrie struct {
	root  [256]int32       // the node after each first byte, or -1
	edges map[uint64]int32 // (node, byte) -> next node
	rank  []int32          // per node, the index in Tokenizer.special of the token ending there, or -1
}

func newSpecialTrie(texts []string, special []int32) *specialTrie {
	tr := &specialTrie{edges: map[uint64]int32{}, rank: []int32{-1}}
	for i := range tr.root {
		tr.root[i] = -1
	}
	for r, id := range special {
		s := texts[id]
		node := tr.root[s[0]]
		if node < 0 {
			node = int32(len(tr.rank))
			tr.rank = append(tr.rank, -1)
			tr.root[s[0]] = node
		}
		for i := 1; i < len(s); i++ {
			k := uint64(node)<<8 | uint64(s[i])
			next, ok := tr.edges[k]
			if !ok {
				next = int32(len(tr.rank))
				tr.rank = append(tr.rank, -1)
				tr.edges[k] = next
			}
			node = next
		}
		tr.rank[node] = int32(r)
	}
	return tr
}

// find returns, for each token that use accepts, every place it is
// written in text, ascending (overlapping places included).
func (tr *specialTrie) find(text string, use func(rank int32) bool) map[int32][]int {
	var found map[int32][]int
	for i := 0; i < len(text); i++ {
		node := tr.root[text[i]]
		for j := i + 1; node >= 0; j++ {
			if r := tr.rank[node]; r >= 0 && use(r) {
				if found == nil {
					found = map[int32][]int{}
				}
				found[r] = append(found[r], i)
			}
			if j == len(text) {
				break
			}
			next, ok := tr.edges[uint64(node)<<8|uint64(text[j])]
			if !ok {
				break
			}
			node = next
		}
	}
	return found
}
