package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/edged/edged/engine"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "--model M --prompt TEXT [-n N] [--temp T] [--seed S] [--adapter A.gguf [--adapter-scale S]] [--json]", stderr)
	var ef engineFlags
	ef.register(fs, "f16")
	prompt := fs.String("prompt", "", "prompt `text` (special tokens such as <s> are parsed)")
	fs.StringVar(prompt, "p", "", "shorthand for --prompt")
	n := fs.Int("n", -1, "most tokens to generate (-1: until an end token or a full context)")
	seed := fs.Int64("seed", -1, "sampling seed (-1: random)")
	asJSON := fs.Bool("json", false, `print one JSON object {"prompt_ids", "generated_ids", "text"} at the end instead of streaming text`)
	var sc engine.SamplerConfig
	float32Var(fs, &sc.Temperature, "temp", 0.8, "temperature (0: greedy)")
	fs.IntVar(&sc.TopK, "top-k", 40, "keep the k most likely tokens (0: off)")
	float32Var(fs, &sc.TopP, "top-p", 0.95, "nucleus sampling threshold (1: off)")
	float32Var(fs, &sc.MinP, "min-p", 0.05, "drop tokens below this share of the best one's probability (0: off)")
	float32Var(fs, &sc.RepeatPenalty, "repeat-penalty", 1, "penalty for repeated tokens (1: off)")
	float32Var(fs, &sc.PresencePenalty, "presence-penalty", 0, "OpenAI presence penalty")
	float32Var(fs, &sc.FrequencyPenalty, "frequency-penalty", 0, "OpenAI frequency penalty")
	fs.IntVar(&sc.PenaltyLastN, "repeat-last-n", 64, "tokens the penalties look back over (-1: all)")
	var stops stringList
	fs.Var(&stops, "stop", "stop `string` (repeatable)")
	var af adapterFlags
	af.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if ef.model == "" {
		return usageError(fs, "--model is required")
	}
	sc.Seed = uint64(*seed)
	if *seed < 0 {
		sc.Seed = rand.Uint64()
	}
	l, ad, err := af.open(&ef)
	if err != nil {
		return err
	}
	defer l.Close()
	tok, err := l.tokenizer()
	if err != nil {
		return err
	}
	ids := tok.Encode(*prompt, true, true)
	seq, free, err := ad.newSequence(l.engine)
	if err != nil {
		return err
	}
	defer free()
	var text strings.Builder
	emit := func(s string) error {
		text.WriteString(s)
		if *asJSON {
			return nil
		}
		_, err := io.WriteString(stdout, s)
		return err
	}
	opts := engine.GenerateOptions{MaxTokens: max(*n, 0), Sampler: sc, Stop: stops}
	gen, err := l.engine.Generate(ctx, seq, ids, tok, opts, emit)
	if err != nil {
		return err
	}
	if !*asJSON {
		_, err = fmt.Fprintln(stdout)
		return err
	}
	return json.NewEncoder(stdout).Encode(struct {
		PromptIDs    []int32 `json:"prompt_ids"`
		GeneratedIDs []int32 `json:"generated_ids"`
		Text         string  `json:"text"`
		StopReason   string  `json:"stop_reason"`
	}{ids, nonNil(gen.IDs), text.String(), string(gen.Reason)})
}

// float32Value is a float32 flag.
type float32Value struct{ p *float32 }

func (f float32Value) String() string {
	if f.p == nil {
		return "0"
	}
	return strconv.FormatFloat(float64(*f.p), 'g', -1, 32)
}

func (f float32Value) Set(s string) error {
	v, err := strconv.ParseFloat(s, 32)
	if err != nil {
		return err
	}
	*f.p = float32(v)
	return nil
}

func float32Var(fs *flag.FlagSet, p *float32, name string, value float32, usage string) {
	*p = value
	fs.Var(float32Value{p}, name, usage)
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil(ids []int32) []int32 {
	if ids == nil {
		return []int32{}
	}
	return ids
}
