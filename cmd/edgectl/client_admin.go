package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edged/edged/protocol"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "[--json]", stderr)
	mk := socketFlag(fs)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	var st protocol.Status
	if err := mk().call(ctx, http.MethodGet, "/status", nil, &st); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	state := "serving"
	if st.Draining {
		state = "draining"
	}
	budget := "unlimited"
	if st.MemoryBudget > 0 {
		budget = mib(st.MemoryBudget)
	}
	fmt.Fprintf(stdout, "edged %s on node %s: %s, up %v\nmemory: %s used of %s\n", st.DaemonVersion, st.Node, state, time.Duration(st.UptimeSeconds)*time.Second, mib(st.MemoryUsed), budget)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tSTATE\tQUEUED\tACTIVE\tKV TOKENS\tMEMORY\tBACKEND")
	for _, m := range st.Models {
		be := m.Backend
		if be == "" { // not loaded
			be = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", m.Name, m.State, m.QueueDepth, m.Active, m.KVTokens, mib(m.MemoryBytes), be)
	}
	return tw.Flush()
}

func runModels(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("models", "[--json]", stderr)
	mk := socketFlag(fs)
	asJSON := fs.Bool("json", false, "print the list as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	var list protocol.ModelList
	if err := mk().call(ctx, http.MethodGet, "/v1/models", nil, &list); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tSIZE\tCONTEXT\tPATH")
	for _, m := range list.Data {
		ctxLen := "-"
		if m.Context > 0 {
			ctxLen = fmt.Sprint(m.Context)
		}
		state := m.State
		if m.Error != "" {
			state += " (" + m.Error + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.ID, state, mib(m.SizeBytes), ctxLen, m.Path)
	}
	return tw.Flush()
}

// runLoad loads a registered model by name, or registers a file (under
// --name, else its base name) and loads it.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("load", "[--name NAME] NAME|PATH", stderr)
	mk := socketFlag(fs)
	name := fs.String("name", "", "register a file under this `name` (default: its base name)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError(fs, "give one model name or GGUF file")
	}
	arg := fs.Arg(0)
	req := protocol.LoadRequest{Model: arg}
	if strings.ContainsRune(arg, os.PathSeparator) || strings.HasSuffix(arg, ".gguf") {
		abs, err := filepath.Abs(arg)
		if err != nil {
			return err
		}
		req = protocol.LoadRequest{Model: *name, Path: abs}
	}
	var m protocol.Model
	if err := mk().call(ctx, http.MethodPost, "/v1/models/load", req, &m); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %s (context %d, %s)\n", m.ID, m.State, m.Context, mib(m.MemoryBytes))
	return nil
}

func runUnload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("unload", "NAME", stderr)
	mk := socketFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError(fs, "give one model name")
	}
	if err := mk().call(ctx, http.MethodPost, "/v1/models/unload", protocol.UnloadRequest{Model: fs.Arg(0)}, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: unloaded\n", fs.Arg(0))
	return nil
}

func runMetrics(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("metrics", "", stderr)
	mk := socketFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	resp, err := mk().do(ctx, http.MethodGet, "/metrics", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(stdout, resp.Body)
	return err
}

func mib(n int64) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
