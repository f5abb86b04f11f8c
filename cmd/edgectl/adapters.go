package main

// edgectl adapters: the adapter versions of the running edged's models.
// Each subcommand is a command in adaptersCommands; edgectl edits rollback
// and edits pull are adapters rollback and pull under the names.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edged/edged/protocol"
)

var adaptersCommands = map[string]command{
	"list":     {"list the adapter versions of the models and which one each model serves", runAdaptersList},
	"add":      {"commit an adapter file (made with edgectl adapt) as a model's newest version", runAdaptersAdd},
	"rollback": {"make another adapter version of a model current (0: the base model)", runAdaptersRollback},
	"publish":  {"publish an adapter version for the other edged nodes of the NATS server", runAdaptersPublish},
	"pull":     {"fetch and commit the adapter version another node published for a model", runAdaptersPull},
}

func runAdaptersList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("adapters list", "[--model M] [--json]", stderr)
	mk := socketFlag(fs)
	model := fs.String("model", "", "list only this model's versions")
	asJSON := fs.Bool("json", false, "print the list as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	list, err := listAdapters(ctx, mk(), *model)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tVERSION\tCURRENT\tKIND\tSIZE\tCREATED\tSOURCE\tDIGEST")
	models := make([]string, 0, len(list.Current))
	for m := range list.Current {
		models = append(models, m)
	}
	slices.Sort(models)
	for _, m := range models {
		cur := list.Current[m]
		if cur == 0 {
			fmt.Fprintf(tw, "%s\t0\t*\tbase model\t-\t-\t-\t-\n", m)
		}
		for _, r := range list.Data {
			if r.Model != m {
				continue
			}
			mark := ""
			if r.AdapterVersion == cur {
				mark = "*"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", m, r.AdapterVersion, mark, r.Kind, humanBytes(r.SizeBytes),
				r.Created.Local().Format(time.DateTime), adapterSource(r.Source), clip(r.Digest, 19))
		}
	}
	return tw.Flush()
}

func listAdapters(ctx context.Context, c *client, model string) (*protocol.AdapterList, error) {
	path := "/v1/adapters"
	if model != "" {
		path += "?model=" + url.QueryEscape(model)
	}
	var list protocol.AdapterList
	if err := c.call(ctx, http.MethodGet, path, nil, &list); err != nil {
		return nil, err
	}
	return &list, nil
}

// adapterSource says in a few words where a version came from.
func adapterSource(s protocol.AdapterSource) string {
	var parts []string
	if s.Job != "" {
		parts = append(parts, "job "+s.Job)
	}
	if len(s.Edits) > 0 {
		parts = append(parts, fmt.Sprintf("%d edits", len(s.Edits)))
	}
	if s.File != "" {
		parts = append(parts, "file "+s.File)
	}
	if o := s.Pulled; o != nil {
		parts = append(parts, fmt.Sprintf("pulled from %s v%d", o.Node, o.AdapterVersion))
	}
	if len(parts) == 0 {
		return "-"
	}
	return clip(strings.Join(parts, ", "), 40)
}

func runAdaptersAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("adapters add", "--model M FILE [--json]\n\nFILE is a LoRA or prefix adapter GGUF (edgectl adapt writes them); it becomes\nthe model's newest version, current at once.", stderr)
	mk := socketFlag(fs)
	model := fs.String("model", "", "model `name` (required)")
	asJSON := fs.Bool("json", false, "print the version's record as JSON")
	pos, err := parseArgs(fs, args)
	switch {
	case err != nil:
		return err
	case *model == "" || len(pos) == 0:
		return usageError(fs, "--model and FILE are required")
	case len(pos) > 1:
		return usageError(fs, "give one FILE")
	}
	file := pos[0]
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	q := url.Values{"model": {*model}, "file": {filepath.Base(file)}}
	resp, err := mk().send(ctx, http.MethodPost, "/v1/adapters/add?"+q.Encode(), "application/octet-stream", f)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var rec protocol.AdapterRecord
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rec)
	}
	_, err = fmt.Fprintf(stdout, "model %s: adapter version %d (%s, %s, %s) is current\n", rec.Model, rec.AdapterVersion, rec.Kind, humanBytes(rec.SizeBytes), rec.Digest)
	return err
}

// runAdaptersRollback is edgectl adapters rollback and edgectl edits
// rollback: without --model it takes the one model that has versions.
func runAdaptersRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("adapters rollback", "[--model M] VERSION [--json]\n\nMakes VERSION, a stored version (see edgectl adapters list), the model's current\none: requests from then on use it, running ones finish on theirs. VERSION 0 makes\nthe base model current. --model may be left out when one model has versions.", stderr)
	mk := socketFlag(fs)
	model := fs.String("model", "", "model `name` (default: the one model that has adapter versions)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError(fs, "give one VERSION")
	}
	version, err := strconv.ParseUint(pos[0], 10, 64)
	if err != nil {
		return usageError(fs, "VERSION %q: want a version number (0: the base model)", pos[0])
	}
	c := mk()
	if *model == "" {
		if *model, err = onlyAdaptedModel(ctx, c); err != nil {
			return err
		}
	}
	var res protocol.AdapterRollbackResponse
	req := protocol.AdapterRollbackRequest{Model: *model, AdapterVersion: version}
	if err := c.call(ctx, http.MethodPost, "/v1/adapters/rollback", req, &res); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, res)
	}
	now := fmt.Sprintf("adapter version %d is current", res.AdapterVersion)
	if res.AdapterVersion == 0 {
		now = "the base model is current"
	}
	_, err = fmt.Fprintf(stdout, "model %s: %s (was %d)\n", res.Model, now, res.Previous)
	return err
}

// onlyAdaptedModel is the one model that has adapter versions.
func onlyAdaptedModel(ctx context.Context, c *client) (string, error) {
	list, err := listAdapters(ctx, c, "")
	if err != nil {
		return "", err
	}
	var models []string
	for _, r := range list.Data {
		if !slices.Contains(models, r.Model) {
			models = append(models, r.Model)
		}
	}
	switch len(models) {
	case 0:
		return "", fmt.Errorf("no model has adapter versions")
	case 1:
		return models[0], nil
	}
	return "", fmt.Errorf("models %s have adapter versions: give --model", strings.Join(models, ", "))
}
