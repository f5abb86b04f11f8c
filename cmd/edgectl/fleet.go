package main

// edgectl adapters publish and adapters pull (also edits pull, the
// issue's name): sharing adapter versions with the other edged nodes of
// the NATS server, through the running edged.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/edged/edged/protocol"
)

func runAdaptersPublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("adapters publish", "[--model M] [VERSION] [--json]\n\nPublishes a stored adapter version of the model (default: its current one) for\nthe other edged nodes of the NATS server, which take it with edgectl edits pull.\n--model may be left out when one model has versions.", stderr)
	mk := socketFlag(fs)
	model := fs.String("model", "", "model `name` (default: the one model that has adapter versions)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	var version uint64
	switch len(pos) {
	case 0:
	case 1:
		if version, err = strconv.ParseUint(pos[0], 10, 64); err != nil || version == 0 {
			return usageError(fs, "VERSION %q: want a version number (see edgectl adapters list)", pos[0])
		}
	default:
		return usageError(fs, "give at most one VERSION")
	}
	c := mk()
	if *model == "" {
		if *model, err = onlyAdaptedModel(ctx, c); err != nil {
			return err
		}
	}
	var res protocol.AdapterPublishResponse
	req := protocol.AdapterPublishRequest{Model: *model, AdapterVersion: version}
	if err := c.call(ctx, http.MethodPost, "/v1/adapters/publish", req, &res); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, res)
	}
	p := res.Published
	_, err = fmt.Fprintf(stdout, "model %s: adapter version %d (%s, %s, %s) published (revision %d of %s)\n",
		p.Model, p.AdapterVersion, p.Kind, humanBytes(p.SizeBytes), p.Digest, res.Revision, protocol.AdapterVersionsBucket)
	return err
}

// runAdaptersPull is edgectl adapters pull and edgectl edits pull.
func runAdaptersPull(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("adapters pull", "[--model M] [--any-base] [--json]\n\nFetches the adapter version another edged node published for the model, checks\nits digests and commits it as the model's newest version, current at once; when\na stored version holds it already, nothing changes. --model may be left out when\none model is registered.", stderr)
	mk := socketFlag(fs)
	model := fs.String("model", "", "model `name` (default: the one registered model)")
	anyBase := fs.Bool("any-base", false, "take the version even when it was made for another file of the model (another digest)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError(fs, "unexpected argument %q", pos[0])
	}
	c := mk()
	if *model == "" {
		if *model, err = onlyModel(ctx, c); err != nil {
			return err
		}
	}
	var res protocol.AdapterPullResponse
	req := protocol.AdapterPullRequest{Model: *model, AnyBase: *anyBase}
	if err := c.call(ctx, http.MethodPost, "/v1/adapters/pull", req, &res); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, res)
	}
	p := res.Published
	if !res.Pulled {
		_, err = fmt.Fprintf(stdout, "model %s: adapter version %d holds the published adapter (%s) already; nothing changed\n", res.Model, res.AdapterVersion, p.Digest)
		return err
	}
	_, err = fmt.Fprintf(stdout, "model %s: adapter version %d (%s, %s, %s) pulled from node %s (its version %d) is current\n",
		res.Model, res.AdapterVersion, p.Kind, humanBytes(p.SizeBytes), p.Digest, p.PublishedBy, p.AdapterVersion)
	return err
}

// onlyModel is the one model the running edged has registered.
func onlyModel(ctx context.Context, c *client) (string, error) {
	var list protocol.ModelList
	if err := c.call(ctx, http.MethodGet, "/v1/models", nil, &list); err != nil {
		return "", err
	}
	if len(list.Data) == 1 {
		return list.Data[0].ID, nil
	}
	return "", fmt.Errorf("%d models are registered: give --model", len(list.Data))
}
