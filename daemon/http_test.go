package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/edged/edged/protocol"
)

func socketClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
}

func post(t *testing.T, c *http.Client, path, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Post("http://edged"+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

func TestHTTPBadInput(t *testing.T) {
	o := testOptions(t)
	startDaemon(t, o)
	c := socketClient(o.Socket)
	for _, tc := range []struct {
		path, body string
		status     int
		code       protocol.Code
	}{
		{"/v1/completions", `{"model":"aid","prompt":`, 400, protocol.CodeInvalidJSON},
		{"/v1/completions", `{"model":"aid","prompt":"x","temperature":1e9}`, 400, protocol.CodeInvalidValue},
		{"/v1/completions", `{"model":"aid","prompt":"x","top_k":-5}`, 400, protocol.CodeInvalidValue},
		{"/v1/completions", `{"model":"aid","prompt":"x","wat":1}`, 400, protocol.CodeUnknownField},
		{"/v1/completions", `{"model":"ghost","prompt":"x"}`, 404, protocol.CodeModelNotFound},
		{"/v1/completions", "{\"model\":\"aid\",\"prompt\":\"\xc3\x28\"}", 400, protocol.CodeInvalidUTF8},
		{"/v1/completions", `{"model":"aid","prompt":"` + strings.Repeat("big ", 1<<20) + `"}`, 413, protocol.CodeTooLarge},
		{"/v1/completions", `{"model":"aid","prompt":"` + strings.Repeat("word ", 300) + `"}`, 400, protocol.CodeContextLength},
		{"/v1/chat/completions", `{"model":"aid","messages":[{"role":"pirate","content":"x"}]}`, 400, protocol.CodeInvalidValue},
		{"/v1/tokenize", `{"model":"aid"}`, 200, ""},
		{"/v1/nothing", `{}`, 404, protocol.CodeNotFound},
		{"/v1/models", `{}`, 405, protocol.CodeMethodNotAllowed},
	} {
		resp, data := post(t, c, tc.path, tc.body)
		if resp.StatusCode != tc.status {
			t.Errorf("%s %.50s: status %d, want %d: %s", tc.path, tc.body, resp.StatusCode, tc.status, data)
			continue
		}
		if tc.code == "" {
			continue
		}
		var er protocol.ErrorResponse
		if err := json.Unmarshal(data, &er); err != nil || er.Error == nil || er.Error.Code != tc.code || er.Error.Message == "" {
			t.Errorf("%s %.50s: body %s, want code %s", tc.path, tc.body, data, tc.code)
		}
	}
	// Still serving.
	resp, data := post(t, c, "/v1/completions", `{"model":"aid","prompt":"hi","max_tokens":3}`)
	if resp.StatusCode != 200 {
		t.Fatalf("after bad input: %d %s", resp.StatusCode, data)
	}
}

func TestHTTPStreamAndEndpoints(t *testing.T) {
	o := testOptions(t)
	startDaemon(t, o)
	c := socketClient(o.Socket)
	// Greedy: an unseeded sampled reply may end (EOS) before its 8 tokens.
	resp, err := c.Post("http://edged/v1/chat/completions", "application/json", strings.NewReader(`{"model":"aid","messages":[{"role":"user","content":"hello"}],"max_tokens":8,"temperature":0,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	s := bufio.NewScanner(resp.Body)
	var chunks []protocol.ChatChunk
	done := false
	for s.Scan() {
		line, ok := strings.CutPrefix(s.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			break
		}
		var ch protocol.ChatChunk
		if err := json.Unmarshal([]byte(line), &ch); err != nil {
			t.Fatalf("chunk %s: %v", line, err)
		}
		chunks = append(chunks, ch)
	}
	resp.Body.Close()
	last := chunks[len(chunks)-1]
	if !done || chunks[0].Choices[0].Delta.Role != "assistant" || last.Choices[0].FinishReason == nil || last.Usage == nil || last.Usage.CompletionTokens != 8 {
		t.Fatalf("stream: done %v, %d chunks, last %+v", done, len(chunks), last)
	}
	for _, p := range []string{"/health", "/metrics", "/status", "/v1/models"} {
		r, err := c.Get("http://edged" + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Errorf("%s: %d %s", p, r.StatusCode, body)
		}
		if p == "/metrics" {
			for _, m := range []string{"edged_requests_total{endpoint=\"chat\",model=\"aid\",code=\"ok\"} 1", "edged_time_to_first_token_seconds_bucket", "edged_queue_depth{model=\"aid\"} 0", "edged_model_state{model=\"aid\",state=\"loaded\"} 1", "edged_completion_tokens_total{model=\"aid\"} 8"} {
				if !strings.Contains(string(body), m) {
					t.Errorf("metrics lack %s", m)
				}
			}
		}
	}
}

// A client that never reads its stream holds up nobody else.
func TestHTTPClientNeverReads(t *testing.T) {
	o := testOptions(t)
	startDaemon(t, o)
	conn, err := net.Dial("unix", o.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"model":"aid","prompt":"Once upon a time","max_tokens":100,"stream":true}`
	io.WriteString(conn, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	c := socketClient(o.Socket)
	for range 5 {
		resp, data := post(t, c, "/v1/completions", `{"model":"aid","prompt":"hi","max_tokens":20}`)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, data)
		}
	}
}
