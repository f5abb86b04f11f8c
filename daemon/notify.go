package daemon

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Notifier sends systemd notifications (sd_notify(3)) to the datagram
// socket named by $NOTIFY_SOCKET. A Notifier with no socket does nothing,
// so edged runs the same outside systemd.
type Notifier struct {
	addr string // "" when not under systemd

	mu   sync.Mutex // guards conn
	conn *net.UnixConn
}

// NotifierFromEnv returns a Notifier for $NOTIFY_SOCKET.
func NotifierFromEnv() *Notifier { return NewNotifier(os.Getenv("NOTIFY_SOCKET")) }

// NewNotifier returns a Notifier for the socket path addr ("@name" is an
// abstract socket); "" gives a Notifier that does nothing.
func NewNotifier(addr string) *Notifier { return &Notifier{addr: addr} }

// Send sends the assignments (such as "READY=1", "STATUS=…") as one
// datagram. Failures are returned but are not fatal to the daemon.
func (n *Notifier) Send(assignments ...string) error {
	if n == nil || n.addr == "" {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conn == nil {
		name := n.addr
		if strings.HasPrefix(name, "@") {
			name = "\x00" + name[1:]
		}
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			return fmt.Errorf("notify: %w", err)
		}
		n.conn = c
	}
	_, err := n.conn.Write([]byte(strings.Join(assignments, "\n") + "\n"))
	if err != nil {
		n.conn.Close()
		n.conn = nil
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// WatchdogInterval is $WATCHDOG_USEC when the watchdog is meant for this
// process ($WATCHDOG_PID absent or ours), else 0.
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond
}

// monotonicUsec is the MONOTONIC_USEC= assignment that must accompany
// RELOADING=1 (systemd's Type=notify-reload).
func monotonicUsec() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "MONOTONIC_USEC=0"
	}
	return "MONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
}
