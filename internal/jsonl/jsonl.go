// Package jsonl reads files of one JSON object a line, reporting every bad
// line at once, by file and line number.
package jsonl

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxLine bounds one line; a longer one is an error, not a truncation.
const maxLine = 1 << 26

// Read parses each non-blank line of r with parse. name (a file name)
// prefixes the errors, which name the line and are all returned together;
// a reader with no records is an error that calls them what.
func Read[T any](r io.Reader, name, what string, parse func(line string) (T, error)) ([]T, error) {
	var out []T
	var errs []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), maxLine)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		v, err := parse(text)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", name, line, err))
			continue
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", name, err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no %s", name, what)
	}
	return out, nil
}

// Strict decodes one object into v, refusing fields v does not have.
func Strict(line string, v any) error {
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
