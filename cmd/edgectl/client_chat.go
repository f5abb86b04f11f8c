package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/edged/edged/protocol"
)

// runChat is an interactive chat: each line read is a user turn; the
// answers stream back and the whole history goes with every turn. /exit
// or end of input ends it, /reset forgets the history.
func runChat(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return chat(ctx, args, os.Stdin, stdout, stderr)
}

func chat(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("chat", "--model NAME [--system TEXT] [flags]", stderr)
	mk := socketFlag(fs)
	name := fs.String("model", "", "model `name` (required)")
	fs.StringVar(name, "m", "", "shorthand for --model")
	system := fs.String("system", "", "system prompt")
	var sf samplingFlags
	sf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *name == "" {
		return usageError(fs, "--model is required")
	}
	c := mk()
	var history []protocol.Message
	if *system != "" {
		history = append(history, protocol.Message{Role: "system", Content: protocol.Content(*system)})
	}
	in := bufio.NewScanner(stdin)
	in.Buffer(make([]byte, 64<<10), protocol.MaxTextBytes)
	fmt.Fprint(stderr, "> ")
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		switch line {
		case "":
			fmt.Fprint(stderr, "> ")
			continue
		case "/exit", "/quit":
			return nil
		case "/reset":
			history = history[:0]
			if *system != "" {
				history = append(history, protocol.Message{Role: "system", Content: protocol.Content(*system)})
			}
			fmt.Fprint(stderr, "> ")
			continue
		}
		history = append(history, protocol.Message{Role: "user", Content: protocol.Content(line)})
		req := protocol.ChatRequest{Model: *name, Messages: history, Stream: true}
		req.MaxTokens, req.Stop = sf.apply(&req.Sampling)
		req.AdapterVersion = sf.adapterVersion()
		answer, err := chatTurn(ctx, c, &req, stdout)
		if err != nil {
			return err
		}
		history = append(history, protocol.Message{Role: "assistant", Content: protocol.Content(answer)})
		fmt.Fprint(stderr, "> ")
	}
	return in.Err()
}

func chatTurn(ctx context.Context, c *client, req *protocol.ChatRequest, stdout io.Writer) (string, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/chat/completions", req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var answer strings.Builder
	err = stream(resp.Body, func(data []byte) error {
		var ch protocol.ChatChunk
		if err := json.Unmarshal(data, &ch); err != nil {
			return err
		}
		for _, c := range ch.Choices {
			answer.WriteString(c.Delta.Content)
			if _, err := io.WriteString(stdout, c.Delta.Content); err != nil {
				return err
			}
		}
		return nil
	})
	fmt.Fprintln(stdout)
	return answer.String(), err
}
