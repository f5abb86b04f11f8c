package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/edged/edged/protocol"
)

func runGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("generate", "--model NAME [flags] PROMPT...", stderr)
	mk := socketFlag(fs)
	name := fs.String("model", "", "model `name` (required; see edgectl models)")
	fs.StringVar(name, "m", "", "shorthand for --model")
	prompt := fs.String("prompt", "", "prompt `text` (or give it as arguments)")
	fs.StringVar(prompt, "p", "", "shorthand for --prompt")
	asJSON := fs.Bool("json", false, "print the whole response as JSON at the end instead of streaming text")
	var sf samplingFlags
	sf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *prompt == "" {
		*prompt = strings.Join(fs.Args(), " ")
	}
	if *name == "" || *prompt == "" {
		return usageError(fs, "--model and a prompt are required")
	}
	req := protocol.CompletionRequest{Model: *name, Prompt: protocol.Prompt{Text: *prompt}, Stream: !*asJSON}
	req.MaxTokens, req.Stop = sf.apply(&req.Sampling)
	req.AdapterVersion = sf.adapterVersion()
	c := mk()
	if *asJSON {
		var res protocol.CompletionResponse
		if err := c.call(ctx, http.MethodPost, "/v1/completions", req, &res); err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/completions", req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	err = stream(resp.Body, func(data []byte) error {
		var ch protocol.CompletionChunk
		if err := json.Unmarshal(data, &ch); err != nil {
			return err
		}
		for _, c := range ch.Choices {
			if _, err := io.WriteString(stdout, c.Text); err != nil {
				return err
			}
		}
		return nil
	})
	fmt.Fprintln(stdout)
	return err
}
