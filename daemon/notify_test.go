package daemon

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeNotifySocket listens like systemd's notify socket and returns the
// datagrams received.
func fakeNotifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch := make(chan string, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

// next returns the first message containing want, failing after a while.
func next(t *testing.T, ch <-chan string, want string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-ch:
			if strings.Contains(m, want) {
				return m
			}
		case <-timeout:
			t.Fatalf("no %s from the daemon", want)
		}
	}
}

// The notify protocol: READY after the socket is up, WATCHDOG pings,
// RELOADING with MONOTONIC_USEC on reload then READY again, STOPPING on
// shutdown — in that order.
func TestNotifyProtocol(t *testing.T) {
	path, ch := fakeNotifySocket(t)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", "")
	o := testOptions(t)
	o.Notify = NewNotifier(path)
	o.source = &ConfigSource{Args: []string{"--socket", o.Socket, "--state-dir", o.StateDir}, Getenv: func(string) string { return "" }}
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ready := next(t, ch, "READY=1")
	if !strings.Contains(ready, "STATUS=") {
		t.Errorf("READY without STATUS: %q", ready)
	}
	if c, err := net.Dial("unix", o.Socket); err != nil {
		t.Fatalf("READY before the socket serves: %v", err)
	} else {
		c.Close()
	}
	next(t, ch, "WATCHDOG=1")
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	reloading := next(t, ch, "RELOADING=1")
	if !strings.Contains(reloading, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING without MONOTONIC_USEC: %q", reloading)
	}
	next(t, ch, "READY=1")
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	next(t, ch, "STOPPING=1")
}
