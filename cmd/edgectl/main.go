// Command edgectl is the command-line tool of edged: offline model tools
// (inspect, run, logits, tokenize, convert) that need no daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
)

// command is one subcommand: its one-line summary and its entry point.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"inspect":  {"show a model's architecture, sizes, tensors and metadata", runInspect},
	"run":      {"generate text from a prompt", runRun},
	"logits":   {"write the logits of one forward pass over a prompt", runLogits},
	"tokenize": {"print the token ids of a text", runTokenize},
	"convert":  {"convert a model from another format to GGUF (llama2c)", runConvert},
	"generate": {"generate text with a model of the running edged (streams)", runGenerate},
	"chat":     {"chat interactively with a model of the running edged", runChat},
	"status":   {"show the running edged's state, queues and memory", runStatus},
	"models":   {"list the models registered with the running edged", runModels},
	"load":     {"load a model (by name, or register a GGUF file) in the running edged", runLoad},
	"unload":   {"unload a model from the running edged", runUnload},
	"metrics":  {"print the running edged's metrics (Prometheus text)", runMetrics},
	"edits":    {"the running edged's knowledge edits, and training them offline (edits list|status|rollback|pull|locate|train)", subcommands("edits", editsCommands)},
	"adapters": {"list, add, roll back, publish and pull the running edged's adapter versions (adapters list|add|rollback|publish|pull)", subcommands("adapters", adaptersCommands)},
	"jobs":     {"the running edged's background jobs: adaptation runs (jobs list|submit|watch|pause|resume|cancel)", runJobs},
	"synth":    {"write a random-weight model in the shape of a real one", runSynth},
	"bench":    {"time prompt processing and generation (llama-bench's pp and tg)", runBench},
	"pull":     {"download a model (URL or hf://) into the cache and verify it", runPull},
	"adapt":    {"train a LoRA or prefix adapter with MeZO (forward passes only)", runAdapt},
	"lora":     {"merge LoRA adapters into a model (lora merge)", runLoRA},
	"lemo":     {"train LeMo's token-sparsity pattern predictor (lemo train)", runLeMo},

	"eval-sparsity": {"measure token sparsity: quality, prefill time, attention work, KV bytes", runEvalSparsity},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// dispatch runs the subcommand named by args[0] and returns the exit code.
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "edgectl: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	err := cmd.run(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "edgectl %s: %v\n", args[0], err)
	return 1
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: edgectl COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'edgectl COMMAND --help' for a command's flags.")
}

// subcommands returns the entry point of a command made of subcommands
// (edgectl edits list, edgectl adapters add…), each an entry of table with
// its own flags.
func subcommands(name string, table map[string]command) func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: edgectl %s SUBCOMMAND [flags]\n\nsubcommands:\n", name)
		names := make([]string, 0, len(table))
		width := 0
		for n := range table {
			names = append(names, n)
			width = max(width, len(n))
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(w, "  %-*s %s\n", width, n, table[n].summary)
		}
	}
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
			usage(stderr)
			if len(args) == 0 {
				return errUsage
			}
			return nil
		}
		cmd, ok := table[args[0]]
		if !ok {
			fmt.Fprintf(stderr, "edgectl %s: unknown subcommand %q\n", name, args[0])
			usage(stderr)
			return errUsage
		}
		return cmd.run(ctx, args[1:], stdout, stderr)
	}
}

// errUsage reports a usage error already printed by the flag set.
var errUsage = errors.New("usage")

// newFlags returns a flag set that prints its usage to stderr.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: edgectl %s %s\n\nflags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, mapping a parse failure to errUsage.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

// parseArgs parses the flags of fs wherever they stand among args (the
// flag package stops at the first argument that is not one) and returns
// the other arguments, in order; those after "--" are never flags.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// usageError prints msg and the usage of fs.
func usageError(fs *flag.FlagSet, format string, args ...any) error {
	fmt.Fprintf(fs.Output(), "edgectl %s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return errUsage
}

// isSet reports whether the flag name was given on the command line (an
// empty value included).
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
