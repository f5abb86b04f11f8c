package model

import (
	"errors"
	"fmt"
)

// Config holds the hyper-parameters of a decoder-only transformer, read from
// the "<arch>.*" metadata of a GGUF file.
type Config struct {
	Arch      string
	NEmbd     int     // width of the residual stream
	NLayer    int     // transformer blocks
	NHead     int     // query heads
	NHeadKV   int     // key/value heads (GQA when < NHead, MQA when 1)
	HeadDim   int     // width of one head
	NFF       int     // hidden width of the MLP
	NVocab    int     // rows of the token embedding
	NCtxTrain int     // context length the model was trained for
	RMSEps    float32 // RMSNorm epsilon
	Rope      RopeConfig
}

// RopeConfig describes rotary position embeddings.
type RopeConfig struct {
	Dims  int     // leading dimensions of each head that rotate
	Theta float64 // frequency base
	NeoX  bool    // rotate (i, i+Dims/2) pairs instead of adjacent (2i, 2i+1)
	// FreqFactors divides the frequency of pair i when present (llama 3's
	// rope_freqs tensor): len Dims/2.
	FreqFactors []float32
}

// QDim is the width of all query heads together.
func (c Config) QDim() int { return c.NHead * c.HeadDim }

// KVDim is the width of all key (or value) heads together: one cache row.
func (c Config) KVDim() int { return c.NHeadKV * c.HeadDim }

// GroupSize is the number of query heads that share one key/value head.
func (c Config) GroupSize() int { return c.NHead / c.NHeadKV }

// readConfig reads the hyper-parameters of arch from f.
func readConfig(f *File, arch *Arch) (Config, error) {
	c := Config{Arch: arch.Name}
	var errs []error
	get := func(key string, def int64) int {
		v, err := f.IntOr(arch.Name+"."+key, def)
		if err != nil {
			errs = append(errs, err)
		}
		return int(v)
	}
	const required = -1
	c.NEmbd = get("embedding_length", required)
	c.NLayer = get("block_count", required)
	c.NHead = get("attention.head_count", required)
	c.NHeadKV = get("attention.head_count_kv", int64(c.NHead))
	c.NFF = get("feed_forward_length", required)
	c.NCtxTrain = get("context_length", 2048)
	if c.NHead > 0 {
		c.HeadDim = get("attention.key_length", int64(c.NEmbd/c.NHead))
	}
	c.Rope.Dims = get("rope.dimension_count", int64(c.HeadDim))
	eps, err := f.FloatOr(arch.Name+".attention.layer_norm_rms_epsilon", 1e-5)
	if err != nil {
		errs = append(errs, err)
	}
	c.RMSEps = float32(eps)
	if c.Rope.Theta, err = f.FloatOr(arch.Name+".rope.freq_base", 10000); err != nil {
		errs = append(errs, err)
	}
	c.Rope.NeoX = arch.RopeNeoX
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	return c, c.validate()
}

func (c *Config) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	const limit = 1 << 20 // far above any real model, far below overflow
	for _, v := range []struct {
		name string
		n    int
	}{{"embedding_length", c.NEmbd}, {"block_count", c.NLayer}, {"attention.head_count", c.NHead},
		{"attention.head_count_kv", c.NHeadKV}, {"feed_forward_length", c.NFF}, {"head dim", c.HeadDim}} {
		check(v.n > 0 && v.n <= limit, "%s.%s: %d is outside [1, %d]", c.Arch, v.name, v.n, limit)
	}
	if c.NHeadKV > 0 {
		check(c.NHead%c.NHeadKV == 0, "%s: %d query heads are not a multiple of %d key/value heads", c.Arch, c.NHead, c.NHeadKV)
	}
	check(c.Rope.Dims > 0 && c.Rope.Dims <= c.HeadDim && c.Rope.Dims%2 == 0, "%s.rope.dimension_count: %d must be even and at most the head dim %d", c.Arch, c.Rope.Dims, c.HeadDim)
	check(c.Rope.Theta > 0, "%s.rope.freq_base: %g must be positive", c.Arch, c.Rope.Theta)
	check(c.RMSEps > 0, "%s.attention.layer_norm_rms_epsilon: %g must be positive", c.Arch, c.RMSEps)
	return errors.Join(errs...)
}
