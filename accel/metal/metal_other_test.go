//go:build !darwin

package metal

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestNewOffDarwin(t *testing.T) {
	b, err := New()
	assert.Nil(t, b)
	assert.EqualError(t, err, "metal: needs macOS (Metal.framework)")
}
