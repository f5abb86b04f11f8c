// Command edged is the edged daemon: it serves language models over a
// Unix socket (and NATS) until SIGTERM. SIGHUP reloads the configuration.
//
// See `edged --help` for the flags, `edged --example-config` for every
// configuration key.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edged/edged/daemon"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 1 {
		switch args[0] {
		case "--version", "-version":
			fmt.Println("edged", daemon.DaemonVersion)
			return 0
		case "--example-config", "-example-config":
			fmt.Print(daemon.ExampleConfig)
			return 0
		}
	}
	src := &daemon.ConfigSource{Args: args, Getenv: os.Getenv, Stderr: os.Stderr}
	opts, err := src.Load()
	if errors.Is(err, daemon.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	opts.Logger = log
	// As edgectl pull: HF_TOKEN for gated repositories, HF_ENDPOINT for a mirror.
	opts.Fetch = daemon.PullFunc(opts.CacheDir, daemon.PullOptions{HFEndpoint: os.Getenv("HF_ENDPOINT"), Token: os.Getenv("HF_TOKEN")})
	if opts.NATS.Enabled {
		opts.FrontEnds = append(opts.FrontEnds, daemon.NewNATS(opts.NATS, log))
	}

	d, err := daemon.New(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged:", err)
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if err := d.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "edged:", err)
		d.Close()
		return 1
	}
	for sig := range sigs {
		if sig != syscall.SIGHUP {
			break
		}
		d.Reload(context.Background()) // logs its own errors and keeps serving
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.Scheduler.DrainTimeout+15*time.Second)
	defer cancel()
	if err := d.Shutdown(ctx); err != nil {
		log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}
