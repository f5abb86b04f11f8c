//go:build !unix

package daemon

import "context"

// lockFile does nothing where flock is missing: concurrent pulls of one
// file are not serialized there.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	return func() {}, nil
}
