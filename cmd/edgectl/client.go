package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/edged/edged/protocol"
)

// client talks to edged over its Unix socket.
type client struct {
	socket string
	http   *http.Client
}

// socketFlag registers --socket on fs and returns a function that makes
// the client once the flags are parsed.
func socketFlag(fs *flag.FlagSet) func() *client {
	s := fs.String("socket", "", "edged's Unix socket `path` (default: $EDGED_SOCKET, else $XDG_RUNTIME_DIR/edged/edged.sock, else /run/edged/edged.sock)")
	return func() *client { return newClient(*s) }
}

func defaultSocket() string {
	if s := os.Getenv("EDGED_SOCKET"); s != "" {
		return s
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		p := filepath.Join(d, "edged", "edged.sock")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/run/edged/edged.sock"
}

func newClient(socket string) *client {
	if socket == "" {
		socket = defaultSocket()
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}
	return &client{socket: socket, http: &http.Client{Transport: tr}}
}

// errNoDaemon is the one-line answer when nothing listens on the socket.
type errNoDaemon struct{ socket string }

func (e errNoDaemon) Error() string {
	return fmt.Sprintf("no edged is running at %s: start it with 'edged --model NAME=FILE.gguf' (or 'systemctl start edged'), or point --socket / EDGED_SOCKET at its socket", e.socket)
}

// do sends a request and returns the response when its status is 2xx; an
// error reply is returned as its *protocol.Error.
func (c *client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	if body == nil {
		return c.send(ctx, method, path, "", nil)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return c.send(ctx, method, path, "application/json", bytes.NewReader(b))
}

// send is do with a body of any content type (none when body is nil).
func (c *client) send(ctx context.Context, method, path, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://edged"+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, errNoDaemon{c.socket}
		}
		if errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("no permission to connect to %s: run as edged's user or a member of its socket group", c.socket)
		}
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var er protocol.ErrorResponse
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(data, &er) == nil && er.Error != nil {
			return nil, er.Error
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	return resp, nil
}

// getJSON decodes the reply of a request into out.
func (c *client) call(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// stream reads a server-sent event stream, calling fn with each event's
// data until [DONE]. An error event is returned as its *protocol.Error.
func stream(r io.Reader, fn func(data []byte) error) error {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 16<<20)
	for s.Scan() {
		data, ok := bytes.CutPrefix(s.Bytes(), []byte("data: "))
		if !ok {
			continue
		}
		if string(data) == "[DONE]" {
			return nil
		}
		if bytes.HasPrefix(data, []byte(`{"version":1,"error"`)) || bytes.HasPrefix(data, []byte(`{"error"`)) {
			var er protocol.ErrorResponse
			if json.Unmarshal(data, &er) == nil && er.Error != nil {
				return er.Error
			}
		}
		if err := fn(data); err != nil {
			return err
		}
	}
	if err := s.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

// samplingFlags are the sampling flags, and the adapter version, of
// generate and chat. Only flags given on the command line are sent: the
// others take the model's defaults.
type samplingFlags struct {
	fs        *flag.FlagSet
	maxTokens int
	temp      float64
	topK      int
	topP      float64
	minP      float64
	seed      int64
	repeat    float64
	stops     stringList
	adapter   int64
}

func (f *samplingFlags) register(fs *flag.FlagSet) {
	f.fs = fs
	fs.IntVar(&f.maxTokens, "n", 0, "most tokens to generate (default: the model's)")
	fs.Float64Var(&f.temp, "temp", 0.8, "temperature (0: greedy)")
	fs.IntVar(&f.topK, "top-k", 40, "keep the k most likely tokens (0: off)")
	fs.Float64Var(&f.topP, "top-p", 0.95, "nucleus sampling threshold (1: off)")
	fs.Float64Var(&f.minP, "min-p", 0.05, "drop tokens below this share of the best one's probability")
	fs.Int64Var(&f.seed, "seed", 0, "sampling seed (default: random)")
	fs.Float64Var(&f.repeat, "repeat-penalty", 1, "penalty for repeated tokens (1: off)")
	fs.Var(&f.stops, "stop", "stop `string` (repeatable)")
	fs.Int64Var(&f.adapter, "adapter-version", 0, "the model's adapter `version` to use (default: its current one; -1: none, the base model)")
}

// adapterVersion is the request's adapter_version: nil unless given.
func (f *samplingFlags) adapterVersion() *int64 {
	if isSet(f.fs, "adapter-version") {
		return &f.adapter
	}
	return nil
}

func (f *samplingFlags) apply(s *protocol.Sampling) (maxTokens *int, stop protocol.Stop) {
	if isSet(f.fs, "temp") {
		s.Temperature = &f.temp
	}
	if isSet(f.fs, "top-k") {
		s.TopK = &f.topK
	}
	if isSet(f.fs, "top-p") {
		s.TopP = &f.topP
	}
	if isSet(f.fs, "min-p") {
		s.MinP = &f.minP
	}
	if isSet(f.fs, "seed") {
		s.Seed = &f.seed
	}
	if isSet(f.fs, "repeat-penalty") {
		s.RepeatPenalty = &f.repeat
	}
	if isSet(f.fs, "n") {
		maxTokens = &f.maxTokens
	}
	return maxTokens, protocol.Stop(f.stops)
}
