package adapt

import (
	"errors"
	"io"

	"github.com/edged/edged/internal/jsonl"
	"github.com/edged/edged/model"
)

// jsonExample is one line of a training file.
type jsonExample struct {
	Prompt        *string `json:"prompt"`
	Completion    *string `json:"completion"`
	PromptIDs     []int32 `json:"prompt_ids"`
	CompletionIDs []int32 `json:"completion_ids"`
}

// ReadExamples reads JSONL training data, one object a line:
// {"prompt": "...", "completion": "..."} (tokenized with tok: the prompt
// with BOS and special tokens parsed, the completion as plain text) or
// {"prompt_ids": [...], "completion_ids": [...]} (used as given; tok may
// be nil when every line has ids). Blank lines are skipped; errors name the
// line and are all reported at once.
func ReadExamples(r io.Reader, name string, tok *model.Tokenizer) ([]Example, error) {
	return jsonl.Read(r, name, "examples", func(line string) (Example, error) { return parseExample(line, tok) })
}

func parseExample(text string, tok *model.Tokenizer) (Example, error) {
	var j jsonExample
	if err := jsonl.Strict(text, &j); err != nil {
		return Example{}, err
	}
	var ex Example
	switch {
	case j.PromptIDs != nil || j.CompletionIDs != nil:
		if j.Prompt != nil || j.Completion != nil {
			return ex, errors.New("give prompt/completion or prompt_ids/completion_ids, not both")
		}
		ex = Example{Prompt: j.PromptIDs, Completion: j.CompletionIDs}
	case j.Prompt != nil && j.Completion != nil:
		if tok == nil {
			return ex, errors.New("text examples need a model with a tokenizer (use prompt_ids/completion_ids)")
		}
		ex = Example{Prompt: tok.Encode(*j.Prompt, true, true), Completion: tok.Encode(*j.Completion, false, false)}
	default:
		return ex, errors.New(`want {"prompt": ..., "completion": ...} or {"prompt_ids": [...], "completion_ids": [...]}`)
	}
	if len(ex.Prompt) == 0 || len(ex.Completion) == 0 {
		return ex, errors.New("empty prompt or completion")
	}
	return ex, nil
}
