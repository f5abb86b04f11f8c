package adapt

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

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
	var out []Example
	var errs []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<26)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		ex, err := parseExample(text, tok)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", name, line, err))
			continue
		}
		out = append(out, ex)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", name, err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no examples", name)
	}
	return out, nil
}

func parseExample(text string, tok *model.Tokenizer) (Example, error) {
	var j jsonExample
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
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
