package tests

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/edged/edged/daemon"
	"github.com/edged/edged/protocol"
)

var natsURLRe = regexp.MustCompile(`embedded server listening".*? url=(nats://\S+)`)

// startNATSEdged starts edged with the NATS front end on node, its
// embedded server listening on a random loopback port (or joining url),
// and returns the daemon and the URL of its NATS server.
func startNATSEdged(t *testing.T, node, url string, args ...string) (*edged, string) {
	t.Helper()
	base := []string{"--node", node, "--nats.enabled=true", "--nats.metrics_interval=100ms"}
	if url == "" {
		base = append(base, "--nats-listen", "127.0.0.1:0")
	} else {
		base = append(base, "--nats-url", url)
	}
	e := startEdged(t, append(base, args...)...)
	if url != "" {
		return e, url
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if m := natsURLRe.FindStringSubmatch(e.log.String()); m != nil {
			url = m[1]
			return nil
		}
		return fmt.Errorf("no NATS listener in the log:\n%s", e.log)
	})
	return e, url
}

// natsClient connects over TCP, as another process on the machine would.
func natsClient(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("edged e2e client"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func natsRequest(t *testing.T, nc *nats.Conn, subject, body string) *nats.Msg {
	t.Helper()
	msg, err := nc.Request(subject, []byte(body), 30*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	return msg
}

// natsErr returns the micro error code of a reply ("" for none), checking
// that the body is the protocol's error object with the same code.
func natsErr(t *testing.T, msg *nats.Msg) string {
	t.Helper()
	code := msg.Header.Get(micro.ErrorCodeHeader)
	if code == "" {
		return ""
	}
	var er protocol.ErrorResponse
	if err := json.Unmarshal(msg.Data, &er); err != nil || er.Error == nil || string(er.Error.Code) != code {
		t.Errorf("error reply %s with code %s: %v", msg.Data, code, err)
	}
	return code
}

// natsStream publishes a streaming request and returns its messages up to
// the end (or an error message).
func natsStream(t *testing.T, nc *nats.Conn, subject, body string) []*nats.Msg {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, []byte(body)); err != nil {
		t.Fatal(err)
	}
	var msgs []*nats.Msg
	for {
		m, err := sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("stream %s after %d messages: %v", subject, len(msgs), err)
		}
		msgs = append(msgs, m)
		if m.Header.Get(daemon.HeaderStream) == "end" || m.Header.Get(micro.ErrorCodeHeader) != "" {
			return msgs
		}
	}
}

// The same greedy text over the socket and over NATS (plain and streamed);
// tokenize, models and status answer as on the socket.
func TestNATSGenerate(t *testing.T) {
	e, url := startNATSEdged(t, "e2e1", "")
	nc := natsClient(t, url)
	body := `{"model":"aid","prompt":"Once upon a time","max_tokens":40,"temperature":0}`
	status, data := e.post("/v1/completions", body)
	if status != 200 {
		t.Fatalf("socket: %d %s", status, data)
	}
	want := completion(t, data)

	msg := natsRequest(t, nc, "edged.e2e1.generate", body)
	if code := natsErr(t, msg); code != "" {
		t.Fatalf("generate: %s %s", code, msg.Data)
	}
	got := completion(t, msg.Data)
	if got.Choices[0].Text != want.Choices[0].Text || *got.Usage != *want.Usage {
		t.Errorf("NATS %q %+v, socket %q %+v", got.Choices[0].Text, got.Usage, want.Choices[0].Text, want.Usage)
	}

	// Streamed on the fleet subject: the chunks add up to the same text.
	msgs := natsStream(t, nc, "edged.generate", strings.Replace(body, "{", `{"stream":true,`, 1))
	var text strings.Builder
	for i, m := range msgs {
		if code := natsErr(t, m); code != "" {
			t.Fatalf("chunk %d: %s %s", i, code, m.Data)
		}
		c := completion(t, m.Data)
		text.WriteString(c.Choices[0].Text)
		last := i == len(msgs)-1
		if (c.Usage != nil) != last || (c.Choices[0].FinishReason != nil) != last {
			t.Errorf("chunk %d of %d: usage %v finish %v", i, len(msgs), c.Usage, c.Choices[0].FinishReason)
		}
		if !strings.HasPrefix(m.Header.Get(daemon.HeaderCancel), "edged.e2e1.cancel.") {
			t.Errorf("chunk %d: %s header %q", i, daemon.HeaderCancel, m.Header.Get(daemon.HeaderCancel))
		}
	}
	if len(msgs) < 3 || text.String() != want.Choices[0].Text {
		t.Errorf("%d chunks, text %q, want %q", len(msgs), text.String(), want.Choices[0].Text)
	}

	// Chat, streamed: it ends with the usage.
	msgs = natsStream(t, nc, "edged.e2e1.chat", `{"model":"aid","messages":[{"role":"user","content":"Tell a story"}],"max_tokens":8,"temperature":0,"stream":true}`)
	var end protocol.ChatChunk
	if err := json.Unmarshal(msgs[len(msgs)-1].Data, &end); err != nil || end.Usage == nil || end.Object != protocol.ObjectChatChunk {
		t.Errorf("chat end %s: %v", msgs[len(msgs)-1].Data, err)
	}

	tokBody := `{"model":"aid","content":"Once upon a time"}`
	_, sockTok := e.post("/v1/tokenize", tokBody)
	var a, b protocol.TokenizeResponse
	json.Unmarshal(sockTok, &a)
	if err := json.Unmarshal(natsRequest(t, nc, "edged.tokenize", tokBody).Data, &b); err != nil || fmt.Sprint(a.Tokens) != fmt.Sprint(b.Tokens) || len(b.Tokens) == 0 {
		t.Errorf("tokenize: NATS %v, socket %v (%v)", b.Tokens, a.Tokens, err)
	}
	var list protocol.ModelList
	if err := json.Unmarshal(natsRequest(t, nc, "edged.e2e1.models", "").Data, &list); err != nil || len(list.Data) != 1 || list.Data[0].ID != "aid" {
		t.Errorf("models: %+v %v", list, err)
	}
	var st protocol.Status
	if err := json.Unmarshal(natsRequest(t, nc, "edged.e2e1.status", "").Data, &st); err != nil || st.Node != "e2e1" {
		t.Errorf("status: %+v %v", st, err)
	}

	// The micro service is visible to `nats micro ls/info`.
	var info micro.Info
	if err := json.Unmarshal(natsRequest(t, nc, "$SRV.INFO.edged", "").Data, &info); err != nil || info.Name != "edged" || len(info.Endpoints) != 22 { // five on two scopes, the edit, adapter and job endpoints on the node's
		t.Errorf("service info: %+v %v", info, err)
	}
}

// Bad requests get micro errors with the protocol's codes, and the daemon
// keeps serving; 16 concurrent requests all succeed.
func TestNATSErrorsAndConcurrency(t *testing.T) {
	_, url := startNATSEdged(t, "e2e2", "")
	nc := natsClient(t, url)
	huge := `{"model":"aid","prompt":"` + strings.Repeat("a", protocol.MaxTextBytes+1) + `"}`
	for _, tc := range []struct{ subject, body, code string }{
		{"edged.e2e2.generate", `{"model":"aid","prompt":`, "invalid_json"},
		{"edged.e2e2.generate", `{"model":"aid","prompt":"x","temprature":1}`, "unknown_field"},
		{"edged.e2e2.generate", `{"model":"aid","prompt":"x","top_p":7}`, "invalid_value"},
		{"edged.e2e2.generate", "{\"model\":\"aid\",\"prompt\":\"\xc3\x28\"}", "invalid_utf8"},
		{"edged.e2e2.generate", `{"model":"nope","prompt":"x"}`, "model_not_found"},
		{"edged.e2e2.generate", `{"model":"nope","prompt":"x","stream":true}`, "model_not_found"},
		{"edged.e2e2.generate", huge, "request_too_large"},
		{"edged.e2e2.generate", `{"model":"aid","prompt":"x","max_tokens":100000000}`, "invalid_value"},
		{"edged.e2e2.chat", `{"model":"aid","messages":[]}`, "invalid_value"},
		{"edged.e2e2.tokenize", `{"model":"nope","content":"x"}`, "model_not_found"},
		{"edged.e2e2.status", `[1]`, "invalid_json"},
	} {
		msg := natsRequest(t, nc, tc.subject, tc.body)
		if code := natsErr(t, msg); code != tc.code {
			t.Errorf("%.60s: code %q, want %q (%.200s)", tc.body, code, tc.code, msg.Data)
		}
	}

	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"model":"aid","prompt":"Once upon a time %d","max_tokens":16,"temperature":0}`, i)
			msg, err := nc.Request("edged.generate", []byte(body), 60*time.Second)
			switch {
			case err != nil:
				errs <- err.Error()
			case msg.Header.Get(micro.ErrorCodeHeader) != "":
				errs <- string(msg.Data)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// Two daemons, one joining the other's NATS server as a client: the fleet
// subjects are shared in the queue group, each request answered once, and
// metrics and events are published.
func TestNATSQueueGroupAndEvents(t *testing.T) {
	_, url := startNATSEdged(t, "qa", "")
	nc := natsClient(t, url)
	events, err := nc.SubscribeSync("edged.qb.events")
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := nc.SubscribeSync("edged.qa.metrics")
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	startNATSEdged(t, "qb", url)

	// qb announces itself.
	for {
		m, err := events.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("no started event from qb: %v", err)
		}
		var ev daemon.Event
		if json.Unmarshal(m.Data, &ev) == nil && ev.Kind == "started" {
			break
		}
	}
	seen := map[string]int{}
	for range 40 {
		var st protocol.Status
		if err := json.Unmarshal(natsRequest(t, nc, "edged.status", "").Data, &st); err != nil {
			t.Fatal(err)
		}
		seen[st.Node]++
	}
	if seen["qa"] == 0 || seen["qb"] == 0 {
		t.Errorf("fleet requests answered by %v, want both nodes", seen)
	}
	inbox := nats.NewInbox()
	sub, _ := nc.SubscribeSync(inbox)
	for range 8 {
		nc.PublishRequest("edged.models", inbox, nil)
	}
	for i := range 8 {
		if _, err := sub.NextMsg(10 * time.Second); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
	}
	if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
		t.Errorf("a request answered twice: %s", m.Data)
	}

	m, err := metrics.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var nm daemon.NATSMetrics
	if err := json.Unmarshal(m.Data, &nm); err != nil || nm.Node != "qa" || nm.Status == nil || len(nm.Metrics) == 0 {
		t.Errorf("metrics %.300s: %v", m.Data, err)
	}
}
