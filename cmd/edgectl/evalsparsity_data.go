package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/edged/edged/internal/jsonl"
	"github.com/edged/edged/model"
)

// sparsityLine is one line of an eval-sparsity --data file.
type sparsityLine struct {
	Text *string `json:"text"`
	IDs  []int32 `json:"ids"`
}

// readSparsityDataFile opens path and reads it with readSparsityData.
func readSparsityDataFile(path string, tok *model.Tokenizer, nVocab, n int) ([][]int32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--data: %w", err)
	}
	defer f.Close()
	return readSparsityData(f, path, tok, nVocab, n)
}

// readSparsityData reads eval-sparsity's evaluation sequences, JSONL, one
// object a line: {"text": "..."} (tokenized with tok as plain text, BOS
// and EOS added as the model's metadata asks, like edgectl tokenize does
// by default: a document that happens to contain "<s>" stays text) or
// {"ids": [...]} (used as given; tok may be nil when every line has ids).
// Each sequence is cut to its first n tokens. Blank lines are skipped;
// errors name the file and line and are all reported at once, as
// adapt.ReadExamples does for training data.
//
// A sequence shorter than n is an error rather than skipped: the report's
// figures are means over the sequences, and silently measuring a subset of
// the file would make two runs with different --len --cont incomparable
// without saying so. The error names the line so that it can be cut out.
func readSparsityData(r io.Reader, name string, tok *model.Tokenizer, nVocab, n int) ([][]int32, error) {
	return jsonl.Read(r, name, "sequences", func(line string) ([]int32, error) { return parseSparsityLine(line, tok, nVocab, n) })
}

func parseSparsityLine(text string, tok *model.Tokenizer, nVocab, n int) ([]int32, error) {
	var j sparsityLine
	if err := jsonl.Strict(text, &j); err != nil {
		return nil, err
	}
	var ids []int32
	switch {
	case j.Text != nil && j.IDs != nil:
		return nil, errors.New(`give "text" or "ids", not both`)
	case j.IDs != nil:
		ids = j.IDs
	case j.Text != nil:
		if tok == nil {
			return nil, errors.New(`text needs a model with a tokenizer (use "ids")`)
		}
		ids = tok.Encode(*j.Text, true, false)
	default:
		return nil, errors.New(`want {"text": "..."} or {"ids": [...]}`)
	}
	// The whole line is checked, not only the part used: an id outside
	// the vocabulary means the file was made for another model.
	for i, id := range ids {
		if id < 0 || int(id) >= nVocab {
			return nil, fmt.Errorf("token %d is %d, outside the vocabulary of %d", i, id, nVocab)
		}
	}
	if len(ids) < n {
		return nil, fmt.Errorf("%d tokens, want at least %d (--len + --cont)", len(ids), n)
	}
	return ids[:n], nil
}
