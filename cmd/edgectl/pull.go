package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/edged/edged/daemon"
)

func runPull(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("pull", "REF [--sha256 HEX] [--cache DIR]\n\n"+
		"REF is a local GGUF file, an https:// URL, or hf://OWNER/REPO/FILE.gguf[@REVISION].\n"+
		"The path of the verified file is printed. HF_TOKEN is sent to Hugging Face\n"+
		"(gated repositories); HF_ENDPOINT replaces https://huggingface.co.", stderr)
	sum := fs.String("sha256", "", "expected sha256 of the file, in `hex` (default: the digest the server reports, if any)")
	cache := fs.String("cache", daemon.DefaultOptions().CacheDir, "download cache `dir`ectory")
	quiet := fs.Bool("quiet", false, "draw no progress bar")
	// The flag package stops at the first argument that is not a flag;
	// accept REF before or after the flags.
	var ref string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		ref, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if ref == "" && len(rest) > 0 {
		ref, rest = rest[0], rest[1:]
	}
	if ref == "" || len(rest) > 0 {
		return usageError(fs, "give exactly one REF")
	}
	opts := daemon.PullOptions{
		SHA256:     *sum,
		HFEndpoint: os.Getenv("HF_ENDPOINT"),
		Token:      os.Getenv("HF_TOKEN"),
	}
	if !*quiet && isTerminal(stderr) {
		opts.Progress = stderr
	}
	path, err := daemon.Pull(ctx, ref, *cache, opts)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, path)
	return err
}

// isTerminal reports whether w is a character device (a terminal), where a
// progress bar redrawn with carriage returns makes sense.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
