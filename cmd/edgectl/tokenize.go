package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/edged/edged/model"
)

func runTokenize(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("tokenize", "--model M [--no-add-special] [--parse-special] (--text T | --file F)", stderr)
	path := fs.String("model", "", "GGUF model or vocabulary `file` (required)")
	fs.StringVar(path, "m", "", "shorthand for --model")
	noAdd := fs.Bool("no-add-special", false, "do not add BOS/EOS as the model's metadata asks")
	parseSpecial := fs.Bool("parse-special", false, "turn special-token text such as <s> into its token")
	text := fs.String("text", "", "`text` to tokenize")
	file := fs.String("file", "", "`file` whose whole content is tokenized")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *path == "" {
		return usageError(fs, "--model is required")
	}
	if isSet(fs, "text") == isSet(fs, "file") {
		return usageError(fs, "give exactly one of --text and --file")
	}
	input := *text
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil {
			return err
		}
		input = string(b)
	}
	f, err := model.Open(*path)
	if err != nil {
		return err
	}
	defer f.Close()
	tok, err := model.NewTokenizer(f)
	if err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	ids := tok.Encode(input, !*noAdd, *parseSpecial)
	words := make([]string, len(ids))
	for i, id := range ids {
		words[i] = fmt.Sprint(id)
	}
	_, err = fmt.Fprintln(stdout, strings.Join(words, " "))
	return err
}
