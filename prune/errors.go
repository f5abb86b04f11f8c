package prune

import "errors"

// ErrConfig is wrapped by every error that rejects a Config.
var ErrConfig = errors.New("prune: invalid config")
