package adapt

import (
	"fmt"

	"github.com/edged/edged/model"
)

// Load reads an adapter file of either kind, as its adapter.type says
// (lora or prefix), and checks it against the base model m. It returns a
// *LoRA or a *Prefix.
func Load(path string, m *model.Model) (Trainable, error) {
	f, err := model.Open(path)
	if err != nil {
		return nil, fmt.Errorf("adapt: load adapter: %w", err)
	}
	defer f.Close()
	a, err := readAdapter(f, m)
	if err != nil {
		return nil, fmt.Errorf("adapt: load adapter %s: %w", path, err)
	}
	return a, nil
}

// Parse reads an adapter file of either kind held in memory, as Load
// reads one on disk: the daemon keeps its adapter versions compressed and
// checks a version's digest on the decompressed bytes before parsing them.
// The adapter does not keep references to data.
func Parse(data []byte, m *model.Model) (Trainable, error) {
	f, err := model.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("adapt: parse adapter: %w", err)
	}
	a, err := readAdapter(f, m)
	if err != nil {
		return nil, fmt.Errorf("adapt: parse adapter: %w", err)
	}
	return a, nil
}

func readAdapter(f *model.File, m *model.Model) (Trainable, error) {
	if t, _ := f.String(keyType); t != "adapter" {
		return nil, fmt.Errorf("%w: general.type is %q, want \"adapter\"", ErrNotAdapter, t)
	}
	switch t, _ := f.String(keyAdapter); t {
	case "lora":
		return readLoRA(f, m)
	case "prefix":
		return readPrefix(f, m)
	default:
		return nil, fmt.Errorf("%w: adapter.type is %q, want \"lora\" or \"prefix\"", ErrNotAdapter, t)
	}
}
