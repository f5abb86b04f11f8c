package adapt

import "errors"

// Sentinel errors. Errors returned by this package wrap them with context;
// test with errors.Is.
var (
	// ErrNotAdapter: a file is not an adapter of the expected kind.
	ErrNotAdapter = errors.New("not an adapter file")
	// ErrMismatch: an adapter does not fit the base model (architecture,
	// tensor names or shapes).
	ErrMismatch = errors.New("adapter does not match the base model")
	// ErrCheckpoint: a training checkpoint is malformed or belongs to
	// another adapter.
	ErrCheckpoint = errors.New("invalid checkpoint")
)
