package model

import (
	"errors"
	"fmt"
)

// ErrMissingKey is wrapped by the getters when a metadata key is absent.
var ErrMissingKey = errors.New("missing metadata key")

// String returns the string value of key.
func (f *File) String(key string) (string, error) {
	v, ok := f.meta[key]
	if !ok {
		return "", fmt.Errorf("%w: %s", ErrMissingKey, key)
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("metadata %s: got %T, want string", key, v)
	}
	return s, nil
}

// Int returns the value of key, which may be stored as any integer type.
func (f *File) Int(key string) (int64, error) {
	v, ok := f.meta[key]
	if !ok {
		return 0, fmt.Errorf("%w: %s", ErrMissingKey, key)
	}
	switch x := v.(type) {
	case uint8:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int64:
		return x, nil
	case uint64:
		if x > 1<<62 {
			return 0, fmt.Errorf("metadata %s: %d is out of range", key, x)
		}
		return int64(x), nil
	}
	return 0, fmt.Errorf("metadata %s: got %T, want an integer", key, v)
}

// Float returns the value of key, stored as a float or an integer.
func (f *File) Float(key string) (float64, error) {
	v, ok := f.meta[key]
	if !ok {
		return 0, fmt.Errorf("%w: %s", ErrMissingKey, key)
	}
	switch x := v.(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	}
	n, err := f.Int(key)
	if err != nil {
		return 0, fmt.Errorf("metadata %s: got %T, want a number", key, v)
	}
	return float64(n), nil
}

// Bool returns the boolean value of key.
func (f *File) Bool(key string) (bool, error) {
	v, ok := f.meta[key]
	if !ok {
		return false, fmt.Errorf("%w: %s", ErrMissingKey, key)
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("metadata %s: got %T, want bool", key, v)
	}
	return b, nil
}

// IntOr, FloatOr, BoolOr and StringOr return def when key is absent, and
// an error when it is present with the wrong type.
func (f *File) IntOr(key string, def int64) (int64, error) {
	if _, ok := f.meta[key]; !ok {
		return def, nil
	}
	return f.Int(key)
}

func (f *File) FloatOr(key string, def float64) (float64, error) {
	if _, ok := f.meta[key]; !ok {
		return def, nil
	}
	return f.Float(key)
}

func (f *File) BoolOr(key string, def bool) (bool, error) {
	if _, ok := f.meta[key]; !ok {
		return def, nil
	}
	return f.Bool(key)
}

func (f *File) StringOr(key string, def string) (string, error) {
	if _, ok := f.meta[key]; !ok {
		return def, nil
	}
	return f.String(key)
}

// Array returns the array value of key as a slice of T.
func Array[T any](f *File, key string) ([]T, error) {
	v, ok := f.meta[key]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrMissingKey, key)
	}
	a, ok := v.([]T)
	if !ok {
		var want []T
		return nil, fmt.Errorf("metadata %s: got %T, want %T", key, v, want)
	}
	return a, nil
}
