package prune

import "errors"

// ErrConfig is wrapped by every error that rejects a Config.
var ErrConfig = errors.New("prune: invalid config")

// ErrPredictorFile is wrapped by every error that rejects a LeMo
// predictor file.
var ErrPredictorFile = errors.New("prune: malformed predictor file")
