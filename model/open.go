package model

import "fmt"

// Open memory-maps the GGUF file at path and parses it. Close releases it.
func Open(path string) (*File, error) {
	data, unmap, err := mapFile(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f, err := Parse(data)
	if err != nil {
		_ = unmap()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f.unmap = unmap
	return f, nil
}
