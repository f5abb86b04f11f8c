package main

// edgectl edits: the knowledge edits the running edged received from the
// edit stream. Each subcommand is a command in editsCommands.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edged/edged/protocol"
)

var editsCommands = map[string]command{
	"list":   {"list the stored edits with their status", runEditsList},
	"status": {"show one edit, or how many edits have each status", runEditsStatus},
	// The name for it: edits become active in an adapter version,
	// and rolling back the edits is rolling back the version.
	"rollback": {"make another adapter version current (as adapters rollback)", runAdaptersRollback},
	// Another node trained the edits: take its version instead.
	"pull":   {"fetch the adapter version another node published (as adapters pull)", runAdaptersPull},
	"submit": {"train a model's pending and active edits now, in a background job of the running edged", runEditsSubmit},
	// Offline, on a model file: what the daemon's edit training does.
	"locate": {"train briefly on each candidate layer and print the edit metrics of each", runEditsLocate},
	"train":  {"train edits (LocFT-BF) until each is learnt; write the adapter and print the metrics", runEditsTrain},
}

func runEditsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("edits list", "[--status "+strings.Join(protocol.EditStatuses, "|")+"] [--json]", stderr)
	mk := socketFlag(fs)
	status := fs.String("status", "", "list only the edits of this `status`")
	asJSON := fs.Bool("json", false, "print the list as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	path := "/v1/edits"
	if *status != "" {
		path += "?status=" + url.QueryEscape(*status)
	}
	var list protocol.EditList
	if err := mk().call(ctx, http.MethodGet, path, nil, &list); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tMODEL\tSEQ\tRECEIVED\tDETAIL")
	for _, r := range list.Data {
		model := "-"
		if r.Edit != nil {
			model = r.Edit.Model
		}
		seq := r.StreamSeq
		if seq == 0 { // retracted before it arrived: the retraction's
			seq = r.RetractSeq
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, r.Status, model, seq, r.ReceivedAt.Local().Format(time.DateTime), editDetail(r))
	}
	return tw.Flush()
}

// editDetail is one line about an edit: why it was rejected, else its
// prompt and target.
func editDetail(r protocol.EditRecord) string {
	switch {
	case r.Error != nil:
		return clip(string(r.Error.Code)+": "+r.Error.Message, 80)
	case r.Edit != nil:
		return fmt.Sprintf("%q → %q", clip(r.Edit.Prompt, 32), clip(r.Edit.Target, 32))
	}
	return "retracted before it arrived"
}

// clip shortens s to at most n runes.
func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func runEditsStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("edits status", "[ID] [--json]\n\nWith ID, the edit's record; without, how many edits have each status.", stderr)
	mk := socketFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usageError(fs, "give at most one ID")
	}
	var id string
	if len(pos) == 1 {
		id = pos[0]
	}
	if id == "" {
		return editCounts(ctx, mk(), stdout, *asJSON)
	}
	var rec protocol.EditRecord
	if err := mk().call(ctx, http.MethodGet, "/v1/edits/status?id="+url.QueryEscape(id), nil, &rec); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rec)
	}
	return printEdit(stdout, rec)
}

// editCounts prints the number of stored edits of each status.
func editCounts(ctx context.Context, c *client, stdout io.Writer, asJSON bool) error {
	var list protocol.EditList
	if err := c.call(ctx, http.MethodGet, "/v1/edits", nil, &list); err != nil {
		return err
	}
	counts := map[string]int{}
	for _, s := range protocol.EditStatuses {
		counts[s] = list.Counts[s]
	}
	if asJSON {
		return printJSON(stdout, counts)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tEDITS")
	for _, s := range protocol.EditStatuses {
		fmt.Fprintf(tw, "%s\t%d\n", s, counts[s])
	}
	return tw.Flush()
}

// printEdit prints a record, one field a line.
func printEdit(w io.Writer, r protocol.EditRecord) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	line := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s:\t%s\n", k, fmt.Sprintf(format, args...)) }
	line("id", "%s", r.ID)
	line("status", "%s", r.Status)
	if r.AdapterVersion != 0 {
		line("adapter version", "%d (the newest that holds it)", r.AdapterVersion)
	}
	if r.Error != nil {
		line("reason", "%s: %s", r.Error.Code, r.Error.Message)
	}
	if e := r.Edit; e != nil {
		line("model", "%s", e.Model)
		line("prompt", "%q", e.Prompt)
		line("target", "%q", e.Target)
		line("rephrases", "%d", len(e.Rephrases))
		line("locality prompts", "%d", len(e.LocalityPrompts))
		if e.CreatedBy != "" {
			line("created by", "%s", e.CreatedBy)
		}
	}
	if r.StreamSeq != 0 {
		line("received", "%s on %s (stream sequence %d)", r.ReceivedAt.Local().Format(time.DateTime), r.Subject, r.StreamSeq)
	}
	if !r.RetractedAt.IsZero() {
		line("retracted", "%s (stream sequence %d)", r.RetractedAt.Local().Format(time.DateTime), r.RetractSeq)
	}
	return tw.Flush()
}

// runEditsSubmit submits an edit job: what edged does by itself once a
// model's edits change (edits.train), by hand and with other settings.
func runEditsSubmit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("edits submit", "--model NAME [--optimizer grad|mezo] [--layer L] [--rank R] [--steps N] [--lr LR] [--stop-loss L] [--seed S] [--watch]\n\n"+
		"Trains the model's pending and active edits into a new adapter version, in a background job; the flags left out take edged's edits.* settings.", stderr)
	mk := socketFlag(fs)
	modelName := fs.String("model", "", "`name` of a model registered with edged (required)")
	var cfg protocol.EditsJob
	fs.StringVar(&cfg.Optimizer, "optimizer", "", "optimizer: "+strings.Join(protocol.EditOptimizers, " or "))
	layer := fs.Int("layer", 0, "layer whose MLP down-projection is adapted")
	rank := fs.Int("rank", 0, "rank of the LoRA (0: a full delta of the projection)")
	seed := fs.Uint64("seed", 1, "seed of the run")
	fs.IntVar(&cfg.Steps, "steps", 0, "most optimizer steps")
	fs.Float64Var(&cfg.LR, "lr", 0, "learning rate")
	fs.Float64Var(&cfg.StopLoss, "stop-loss", 0, "stop once every edit's loss is below this (nats)")
	watch := fs.Bool("watch", false, "follow the job with a progress bar until it ends")
	every := fs.Duration("interval", 500*time.Millisecond, "with --watch, how often to ask edged")
	asJSON := fs.Bool("json", false, "print the job as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *modelName == "" {
		return usageError(fs, "--model is required")
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "layer":
			cfg.Layer = layer
		case "rank":
			cfg.Rank = rank
		case "seed":
			cfg.Seed = seed
		}
	})
	c := mk()
	var j protocol.Job
	if err := c.call(ctx, http.MethodPost, "/v1/jobs/submit", protocol.JobSubmitRequest{Kind: protocol.JobKindEdits, Model: *modelName, Edits: &cfg}, &j); err != nil {
		return err
	}
	if *watch {
		return watchJob(ctx, c, j.ID, *every, stdout, stderr, *asJSON)
	}
	if *asJSON {
		return printJSON(stdout, j)
	}
	fmt.Fprintf(stdout, "%s %s: at most %d steps on %d edits of model %s\n", j.ID, j.State, j.Steps, j.Examples, j.Model)
	return nil
}
