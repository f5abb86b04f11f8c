package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edged/edged/model"
)

func runSynth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("synth", "--shape NAME --type T --out M.gguf [--seed S] | --list", stderr)
	shapeName := fs.String("shape", "", "model `shape` (see --list)")
	typ := fs.String("type", "q4_0", "file `type`: "+strings.Join(model.FTypeNames(), ", "))
	out := fs.String("out", "", "GGUF `file` to write")
	seed := fs.Uint64("seed", 1, "random seed: the same seed gives the same file")
	list := fs.Bool("list", false, "list the shapes and exit")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *list {
		return listShapes(stdout)
	}
	if *shapeName == "" || *out == "" {
		return usageError(fs, "--shape and --out are required")
	}
	shape, err := model.ShapeByName(*shapeName)
	if err != nil {
		return usageError(fs, "%v", err)
	}
	ft, err := model.ParseFType(*typ)
	if err != nil {
		return usageError(fs, "%v", err)
	}
	plan, err := model.PlanSynth(shape, ft)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	start := time.Now()
	if err := model.SynthesizeContext(ctx, shape, ft, *seed, *out); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "wrote %s: %s %s, %s params, %s of tensors, in %.1fs\n", *out, shape.Name, ft,
		formatParams(plan.Params()), formatSize(plan.Size()), time.Since(start).Seconds())
	return err
}

func listShapes(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "shape\tarch\tn_embd\tlayers\theads\tkv heads\tn_ff\tvocab\toutput\ttokenizer")
	for _, s := range model.Shapes() {
		output := "separate"
		if s.Tied {
			output = "tied"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s/%s\n", s.Name, s.Arch, s.Embd, s.Layers, s.Heads, s.KVHeads,
			s.FF, s.Vocab, output, s.Tokenizer.Model, s.Tokenizer.Pre)
	}
	return tw.Flush()
}

// formatSize prints a byte count as llama-bench does.
func formatSize(n int64) string {
	if n < 1<<30 {
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}

// formatParams prints a parameter count as llama-bench does.
func formatParams(n int64) string {
	if n < 1e9 {
		return fmt.Sprintf("%.2f M", float64(n)/1e6)
	}
	return fmt.Sprintf("%.2f B", float64(n)/1e9)
}
