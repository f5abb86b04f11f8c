package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/edged/edged/adapt"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

func runLoRA(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "merge" {
		fmt.Fprintln(stderr, "usage: edgectl lora merge --model M --adapter A.gguf [--adapter-scale S] [--type keep|f16|f32] --out merged.gguf")
		return errUsage
	}
	fs := newFlags("lora merge", "--model M --adapter A.gguf [--adapter B.gguf] --out merged.gguf", stderr)
	modelPath := fs.String("model", "", "base GGUF model `file` (required)")
	var adapters stringList
	var scales scaleList
	fs.Var(&adapters, "adapter", "LoRA adapter `file` (repeatable)")
	fs.Var(&scales, "adapter-scale", "scale of the adapter in the same position (repeatable; default 1)")
	typ := fs.String("type", "keep", "storage of the merged projections: keep (the base's type), f16 or f32")
	out := fs.String("out", "", "merged model `file` (required)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *modelPath == "" || *out == "" || len(adapters) == 0 {
		return usageError(fs, "--model, --adapter and --out are required")
	}
	scaleOf, err := scales.pair(len(adapters))
	if err != nil {
		return usageError(fs, "%v", err)
	}
	var retype func(quant.Type) quant.Type
	switch *typ {
	case "keep":
	case "f16", "f32":
		t, _ := quant.ParseType(*typ)
		retype = func(quant.Type) quant.Type { return t }
	default:
		return usageError(fs, "--type %q: want keep, f16 or f32", *typ)
	}
	f, err := model.Open(*modelPath)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := model.Load(f)
	if err != nil {
		return fmt.Errorf("%s: %w", *modelPath, err)
	}
	applied := make([]adapt.Applied, len(adapters))
	for i, path := range adapters {
		lo, err := adapt.LoadLoRA(path, m)
		if err != nil {
			return err
		}
		applied[i] = adapt.Applied{LoRA: lo, Scale: scaleOf[i]}
	}
	w, err := adapt.MergeLoRA(m, applied, retype)
	if err != nil {
		return err
	}
	if err := w.WriteFile(*out); err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(map[string]any{"out": *out, "adapters": len(applied)})
}
