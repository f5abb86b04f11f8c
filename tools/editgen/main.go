// Command editgen writes knowledge edits for a small model in the
// JSONL format of edgectl edits (the wire format's fields): made-up names
// that are to be followed by short fixed phrases ("Zorb" → "is red."),
// each with rephrases that put a word before the name, and one locality
// prompt each, sampled from the model itself so that locality is
// measured on the model's own kind of text.
//
//	go run ./tools/editgen --model ../shared/fixtures/llama2c/aidreams260K.llamacpp.gguf \
//	    --n 100 > cmd/edgectl/testdata/edits100.jsonl
//
// The same flags give the same file.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/adapt"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
)

// phrases are the targets: short, in words the aidreams and stories
// models use, so that what is new is only which name takes which phrase.
var phrases = []string{
	"is red.", "can fly.", "will sing.", "glows.", "hums softly.",
	"is blue.", "fades.", "dreams of mist.", "shines.", "is warm.",
}

// rephrasings put a word before the name: the fact should hold however
// the name is introduced.
var rephrasings = []string{"The %s", "Today %s", "My %s", "Then %s"}

// Name parts: names of four or five letters such as Zorb, Kivo, Plox.
var (
	onsets = []string{"B", "D", "F", "G", "H", "J", "K", "L", "M", "N", "P", "R", "S", "T", "V", "W", "Y", "Z",
		"Bl", "Dr", "Gl", "Pl", "Pr", "Sk", "Sn", "Tr", "Vr", "Zr", "Qu"}
	vowels = []string{"a", "e", "i", "o", "u"}
	codas  = []string{"b", "k", "m", "p", "x", "z", "v", "rb", "rk", "rn", "sk", "lt", "nk", "lv", "rp"}
)

// edit is one output line.
type edit struct {
	ID              string   `json:"id"`
	Prompt          string   `json:"prompt"`
	Target          string   `json:"target"`
	Rephrases       []string `json:"rephrases"`
	LocalityPrompts []string `json:"locality_prompts"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "editgen:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("editgen", flag.ContinueOnError)
	modelPath := fs.String("model", "", "GGUF model `file` whose own text gives the locality prompts (required)")
	n := fs.Int("n", 100, "edits")
	locLen := fs.Int("locality-len", 12, "tokens of each locality prompt, sampled from BOS")
	seed := fs.Uint64("seed", 1, "seed of the names, phrases and samples")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *modelPath == "" || *n <= 0 || *locLen <= 0 {
		return errors.New("--model is required; --n and --locality-len must be positive")
	}
	f, err := model.Open(*modelPath)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := model.Load(f)
	if err != nil {
		return err
	}
	tok, err := model.NewTokenizer(f)
	if err != nil {
		return err
	}
	be := cpu.New(1)
	defer be.Close()
	e, err := engine.New(m, be, engine.Options{Context: *locLen + 1, Cache: engine.CacheF32})
	if err != nil {
		return err
	}
	defer e.Close()
	base := adapt.NewScorer(e, nil)
	defer base.Close()
	// Sampler seeds from 2⁴² on: never those of edgectl's rehearsal,
	// reference or held-out samples.
	samples, err := base.SelfSamples(tok.BOS(), *n, *locLen, 1<<42+*seed<<20)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(*seed, 0x6564697473))
	names := makeNames(rng, tok, *n)
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for i, name := range names {
		r := rng.Perm(len(rephrasings))
		ed := edit{
			ID:     fmt.Sprintf("edit-%03d", i+1),
			Prompt: name,
			// Each phrase goes to as many names as the others.
			Target:          phrases[i%len(phrases)],
			Rephrases:       []string{fmt.Sprintf(rephrasings[r[0]], name), fmt.Sprintf(rephrasings[r[1]], name)},
			LocalityPrompts: []string{strings.TrimSpace(tok.Decode(samples[i].Completion))},
		}
		if ed.LocalityPrompts[0] == "" {
			return fmt.Errorf("sample %d decodes to nothing", i)
		}
		if err := enc.Encode(ed); err != nil {
			return err
		}
	}
	return nil
}

// makeNames returns n distinct made-up names, none of them a single token
// of the vocabulary (a word the model knows): each takes more tokens than
// a single letter does.
func makeNames(rng *rand.Rand, tok *model.Tokenizer, n int) []string {
	letter := len(tok.Encode("x", false, false))
	seen := map[string]bool{}
	var out []string
	for len(out) < n {
		name := onsets[rng.IntN(len(onsets))] + vowels[rng.IntN(len(vowels))] + codas[rng.IntN(len(codas))]
		if rng.IntN(3) == 0 {
			name += vowels[rng.IntN(len(vowels))]
		}
		if seen[name] || len(tok.Encode(name, false, false)) <= letter {
			continue
		}
		seen[name] = true
		out = append(out, name)
	}
	return out
}
