package main

import (
	"context"
	"fmt"
	"io"

	"github.com/edged/edged/model"
)

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "llama2c" {
		fmt.Fprintln(stderr, "usage: edgectl convert llama2c --checkpoint C.bin --tokenizer T.bin --out M.gguf")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return errUsage
	}
	fs := newFlags("convert llama2c", "--checkpoint C.bin --tokenizer T.bin --out M.gguf", stderr)
	ckpt := fs.String("checkpoint", "", "llama2.c checkpoint `file` (run.c format)")
	tok := fs.String("tokenizer", "", "llama2.c tokenizer.bin `file`")
	out := fs.String("out", "", "GGUF `file` to write")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *ckpt == "" || *tok == "" || *out == "" {
		return usageError(fs, "--checkpoint, --tokenizer and --out are required")
	}
	if err := model.ConvertLlama2c(*ckpt, *tok, *out); err != nil {
		return err
	}
	_, err := fmt.Fprintf(stdout, "wrote %s\n", *out)
	return err
}
