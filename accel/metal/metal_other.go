//go:build !darwin

package metal

import "errors"

// New reports that Metal exists only on macOS.
func New() (*Backend, error) {
	return nil, errors.New("metal: needs macOS (Metal.framework)")
}
