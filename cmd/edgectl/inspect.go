package main

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("inspect", "[--tensors] MODEL", stderr)
	tensors := fs.Bool("tensors", false, "list every tensor")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError(fs, "give one model file")
	}
	path := fs.Arg(0)
	f, err := model.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := &errWriter{w: stdout}
	w.printf("file:        %s (GGUF v%d, %d tensors, %d metadata keys)\n", path, f.Version, len(f.Tensors), len(f.Keys()))
	inspectModel(w, f)
	inspectTensors(w, f, *tensors)
	w.printf("\nmetadata:\n")
	for _, k := range f.Keys() {
		v, _ := f.Meta(k)
		w.printf("  %-40s %s\n", k, formatValue(v))
	}
	return w.err
}

// inspectModel prints the architecture and sizes, or why the file is not a
// runnable model (a vocabulary-only file, an unknown architecture).
func inspectModel(w *errWriter, f *model.File) {
	m, err := model.Load(f)
	if err != nil {
		w.printf("model:       not runnable: %v\n", err)
		return
	}
	c := m.Config
	var params int64
	for i := range f.Tensors {
		params += f.Tensors[i].Elements()
	}
	w.printf("arch:        %s\n", c.Arch)
	w.printf("parameters:  %s\n", humanCount(params))
	w.printf("layers:      %d\n", c.NLayer)
	w.printf("embedding:   %d\n", c.NEmbd)
	w.printf("heads:       %d query, %d key/value, head dim %d\n", c.NHead, c.NHeadKV, c.HeadDim)
	w.printf("ffn:         %d\n", c.NFF)
	w.printf("vocabulary:  %d\n", c.NVocab)
	w.printf("context:     %d (trained)\n", c.NCtxTrain)
	w.printf("rope:        %d dims, theta %g, %s layout", c.Rope.Dims, c.Rope.Theta, map[bool]string{false: "adjacent-pair", true: "NeoX"}[c.Rope.NeoX])
	if c.Rope.FreqFactors != nil {
		w.printf(", frequency factors")
	}
	w.printf("\noutput:      %s\n", map[bool]string{false: "separate matrix", true: "tied to the token embedding"}[m.Tied])
}

func inspectTensors(w *errWriter, f *model.File, all bool) {
	bytes := map[quant.Type]int64{}
	count := map[quant.Type]int{}
	var total int64
	for i := range f.Tensors {
		t := &f.Tensors[i]
		bytes[t.Type] += t.Size
		count[t.Type]++
		total += t.Size
	}
	types := make([]quant.Type, 0, len(count))
	for t := range count {
		types = append(types, t)
	}
	sort.Slice(types, func(i, j int) bool { return bytes[types[i]] > bytes[types[j]] })
	w.printf("tensor data: %s\n", humanBytes(total))
	for _, t := range types {
		w.printf("  %-6s %4d tensors %10s\n", t, count[t], humanBytes(bytes[t]))
	}
	if !all {
		return
	}
	w.printf("\ntensors:\n")
	for i := range f.Tensors {
		t := &f.Tensors[i]
		w.printf("  %-32s %-6s %-20v %10s\n", t.Name, t.Type, t.Dims, humanBytes(t.Size))
	}
}

// formatValue prints a metadata value, eliding long arrays.
func formatValue(v any) string {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice {
		if s, ok := v.(string); ok {
			return fmt.Sprintf("%q", s)
		}
		return fmt.Sprint(v)
	}
	const show = 8
	parts := make([]string, 0, show+1)
	for i := 0; i < rv.Len() && i < show; i++ {
		parts = append(parts, formatValue(rv.Index(i).Interface()))
	}
	if rv.Len() > show {
		parts = append(parts, fmt.Sprintf("... (%d in all)", rv.Len()))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.2f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.2fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

// errWriter keeps the first write error so printing code stays linear.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
