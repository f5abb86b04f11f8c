package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/edged/edged/engine"
)

func runLogits(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("logits", "--model M (--prompt TEXT | --ids 1,2,3) [--adapter A.gguf [--adapter-scale S]] --out FILE", stderr)
	var ef engineFlags
	ef.register(fs, "f32")
	prompt := fs.String("prompt", "", "prompt `text` (BOS added, special tokens parsed)")
	idList := fs.String("ids", "", "comma-separated token `ids`, used as given")
	out := fs.String("out", "", "output `file`: float32 little-endian, one row of n_vocab per prompt position")
	var af adapterFlags
	af.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case ef.model == "" || *out == "":
		return usageError(fs, "--model and --out are required")
	case isSet(fs, "prompt") == isSet(fs, "ids"):
		return usageError(fs, "give exactly one of --prompt and --ids")
	}
	l, ad, err := af.open(&ef)
	if err != nil {
		return err
	}
	defer l.Close()
	ids, err := parseIDs(*idList)
	if err != nil {
		return err
	}
	if isSet(fs, "prompt") {
		tok, err := l.tokenizer()
		if err != nil {
			return err
		}
		ids = tok.Encode(*prompt, true, true)
	}
	if len(ids) == 0 {
		return fmt.Errorf("the prompt has no tokens")
	}
	seq, free, err := ad.newSequence(l.engine)
	if err != nil {
		return err
	}
	defer free()
	batch := make([]engine.Entry, len(ids))
	for i, id := range ids {
		batch[i] = engine.Entry{Seq: seq, Token: id, Pos: int32(i), Logits: true}
	}
	logits := make([]float32, len(ids)*l.engine.Config().NVocab)
	if err := l.engine.Step(batch, logits); err != nil {
		return err
	}
	if err := writeF32(*out, logits); err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(struct {
		PromptIDs []int32 `json:"prompt_ids"`
	}{ids})
}

// parseIDs parses "1,2,3" (spaces allowed).
func parseIDs(s string) ([]int32, error) {
	var ids []int32
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		v, err := strconv.ParseInt(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--ids: %q is not a token id", f)
		}
		ids = append(ids, int32(v))
	}
	return ids, nil
}

func writeF32(path string, v []float32) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	var b [4]byte
	for _, x := range v {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(x))
		w.Write(b[:])
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
