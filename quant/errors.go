package quant

import "errors"

// Errors returned (wrapped, with context) by this package. Test for them with
// errors.Is.
var (
	// ErrUnknownType means a type id that has no block layout here.
	ErrUnknownType = errors.New("quant: unknown type")
	// ErrLength means an element count that is not a whole number of
	// blocks, or a buffer whose size does not match the element count.
	ErrLength = errors.New("quant: bad length")
)
