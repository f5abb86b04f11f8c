package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
)

func openAidreams(t *testing.T) (*Engine, *model.Tokenizer) {
	f, err := model.Open(fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf"))
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	m, err := model.Load(f)
	require.NoError(t, err)
	tok, err := model.NewTokenizer(f)
	require.NoError(t, err)
	e, err := New(m, cpu.New(0), Options{})
	require.NoError(t, err)
	return e, tok
}

func generate(t *testing.T, e *Engine, tok *model.Tokenizer, prompt string, opts GenerateOptions) (Generation, string, error) {
	seq, err := e.NewSequence(nil)
	require.NoError(t, err)
	defer seq.Free()
	var text strings.Builder
	gen, err := e.Generate(context.Background(), seq, tok.Encode(prompt, true, false), tok, opts, func(s string) error {
		text.WriteString(s)
		return nil
	})
	return gen, text.String(), err
}

func TestGenerate(t *testing.T) {
	e, tok := openAidreams(t)
	gen, text, err := generate(t, e, tok, "The robot", GenerateOptions{MaxTokens: 40})
	require.NoError(t, err)
	assert.Len(t, gen.IDs, 40)
	assert.Equal(t, StopLength, gen.Reason)
	assert.Equal(t, tok.Decode(gen.IDs), text, "the streamed text is the decoded ids")

	// Stop at a string taken from the middle of the greedy text.
	stop := text[10:16]
	gen2, text2, err := generate(t, e, tok, "The robot", GenerateOptions{MaxTokens: 40, Stop: []string{stop}})
	require.NoError(t, err)
	assert.Equal(t, StopString, gen2.Reason)
	assert.Equal(t, text[:strings.Index(text, stop)], text2)

	// Sampling with a seed is reproducible.
	sc := SamplerConfig{Temperature: 0.9, TopK: 40, TopP: 0.95, Seed: 7}
	a, _, err := generate(t, e, tok, "I dream of", GenerateOptions{MaxTokens: 30, Sampler: sc})
	require.NoError(t, err)
	b, _, err := generate(t, e, tok, "I dream of", GenerateOptions{MaxTokens: 30, Sampler: sc})
	require.NoError(t, err)
	assert.Equal(t, a.IDs, b.IDs)
}

func TestGenerateStopsAtFullContext(t *testing.T) {
	e, tok := openAidreams(t)
	gen, _, err := generate(t, e, tok, "The robot", GenerateOptions{})
	require.NoError(t, err)
	assert.Equal(t, StopLength, gen.Reason)
	assert.Equal(t, e.Options().Context-len(tok.Encode("The robot", true, false))+1, len(gen.IDs))
}

func TestGenerateErrors(t *testing.T) {
	e, tok := openAidreams(t)
	seq, err := e.NewSequence(nil)
	require.NoError(t, err)
	_, err = e.Generate(context.Background(), seq, nil, tok, GenerateOptions{}, nil)
	assert.ErrorContains(t, err, "empty prompt")
	_, err = e.Generate(context.Background(), seq, []int32{1}, tok, GenerateOptions{Sampler: SamplerConfig{Temperature: -1}}, nil)
	assert.Error(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	gen, err := e.Generate(ctx, seq, []int32{1}, tok, GenerateOptions{}, nil)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, StopCancel, gen.Reason)
}
