package jsonl

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type rec struct {
	N int `json:"n"`
}

func parseRec(line string) (rec, error) {
	var r rec
	if err := Strict(line, &r); err != nil {
		return r, err
	}
	if r.N < 0 {
		return r, errors.New("negative")
	}
	return r, nil
}

func TestRead(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []rec
		errs     []string // substrings of the error; none: no error
	}{
		{"records and blank lines", "{\"n\":1}\n\n  \n{\"n\":2}\n", []rec{{1}, {2}}, nil},
		{"no trailing newline", `{"n":3}`, []rec{{3}}, nil},
		{"empty", "\n\n", nil, []string{"f: no records"}},
		{"every bad line reported", "{\"n\":1}\n{\"n\":-1}\nnot json\n{\"m\":1}\n", nil,
			[]string{"f:2: negative", "f:3: ", "f:4: json: unknown field \"m\""}},
		{"line too long", `{"n":1}` + "\n" + strings.Repeat(" ", maxLine+1) + "x", nil, []string{"f: bufio.Scanner: token too long"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Read(strings.NewReader(tc.in), "f", "records", parseRec)
			if tc.errs == nil {
				require.NoError(t, err)
				assert.Equal(t, tc.want, got)
				return
			}
			require.Error(t, err)
			for _, e := range tc.errs {
				assert.Contains(t, err.Error(), e)
			}
		})
	}
}

// Read never panics and either returns records or an error.
func FuzzRead(f *testing.F) {
	for _, s := range []string{"{\"n\":1}\n", "\n", "{\"n\":-1}", "[1]\n{\"n\":" + strconv.Itoa(1<<40) + "}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Read(strings.NewReader(in), "f", "records", parseRec)
		if err == nil && len(got) == 0 {
			t.Fatal("no records and no error")
		}
	})
}
