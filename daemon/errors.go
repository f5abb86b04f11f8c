package daemon

import "errors"

// Errors returned by the daemon's lifecycle. Errors a client sees on the
// wire are *protocol.Error values instead, with codes from protocol's table.
var (
	// ErrConfig is wrapped by every configuration error; the message lists
	// all the problems found, each with its file:line where it has one.
	ErrConfig = errors.New("invalid configuration")
	// ErrAlreadyRunning means another edged holds the state database.
	ErrAlreadyRunning = errors.New("another edged is running with this state directory")
	// ErrSocketInUse means a live daemon already answers on the socket path.
	ErrSocketInUse = errors.New("socket already in use")
	// ErrNotStarted is returned by calls that need a started daemon.
	ErrNotStarted = errors.New("daemon not started")
	// ErrClosed is returned after Shutdown.
	ErrClosed = errors.New("daemon shut down")
)
