package adapt

import (
	"errors"
	"fmt"
	"io"

	"github.com/edged/edged/internal/jsonl"
	"github.com/edged/edged/model"
)

// Edit is a knowledge edit: after training, the model should continue
// Prompt with Target. Rephrases are other wordings of Prompt that should
// get Target as well (they measure generalization, and are not trained
// on); Locality prompts are unrelated prompts whose continuations the
// edit must leave alone (they measure locality).
type Edit struct {
	ID        string // the wire format's id, for reports; may be empty
	Prompt    []int32
	Target    []int32
	Rephrases [][]int32
	Locality  [][]int32
}

// Example is the edit as a training example: the loss is on the target
// tokens only.
func (ed Edit) Example() Example { return Example{Prompt: ed.Prompt, Completion: ed.Target} }

// jsonEdit is one line of an edits file: the fields of the wire format's
// edit (protocol.Edit), of which the model, version and author are
// accepted and not used here.
type jsonEdit struct {
	Version         int      `json:"version"`
	ID              string   `json:"id"`
	Model           string   `json:"model"`
	Prompt          string   `json:"prompt"`
	Target          string   `json:"target"`
	Rephrases       []string `json:"rephrases"`
	LocalityPrompts []string `json:"locality_prompts"`
	CreatedBy       string   `json:"created_by"`
}

// ReadEdits reads JSONL edits, one object a line: {"prompt", "target",
// "rephrases": [...], "locality_prompts": [...]} (the last two optional;
// "id", "model", "version" and "created_by" of the wire format are
// accepted). Prompts, rephrases and locality prompts are tokenized as
// prompts (BOS, special tokens parsed), the target as plain text, as
// ReadExamples does a completion. Blank lines are skipped; errors name
// the line and are all reported at once.
func ReadEdits(r io.Reader, name string, tok *model.Tokenizer) ([]Edit, error) {
	if tok == nil {
		return nil, errors.New("adapt: edits are text: they need a model with a tokenizer")
	}
	return jsonl.Read(r, name, "edits", func(line string) (Edit, error) { return parseEdit(line, tok) })
}

func parseEdit(text string, tok *model.Tokenizer) (Edit, error) {
	var j jsonEdit
	if err := jsonl.Strict(text, &j); err != nil {
		return Edit{}, err
	}
	prompt := func(what, s string) ([]int32, error) {
		ids := tok.Encode(s, true, true)
		if s == "" || len(ids) == 0 {
			return nil, fmt.Errorf("empty %s", what)
		}
		return ids, nil
	}
	ed := Edit{ID: j.ID, Target: tok.Encode(j.Target, false, false)}
	if len(ed.Target) == 0 {
		return ed, errors.New("empty target")
	}
	var err error
	if ed.Prompt, err = prompt("prompt", j.Prompt); err != nil {
		return ed, err
	}
	for i, s := range j.Rephrases {
		p, err := prompt(fmt.Sprintf("rephrase %d", i+1), s)
		if err != nil {
			return ed, err
		}
		ed.Rephrases = append(ed.Rephrases, p)
	}
	for i, s := range j.LocalityPrompts {
		p, err := prompt(fmt.Sprintf("locality prompt %d", i+1), s)
		if err != nil {
			return ed, err
		}
		ed.Locality = append(ed.Locality, p)
	}
	return ed, nil
}
