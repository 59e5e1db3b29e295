package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// setupTimeout bounds `linkpipe setup`.
const setupTimeout = time.Minute

// runSetup creates or updates every stream, consumer and bucket
// (bus.Setup) with the credentials given, which need JetStream admin
// rights (the admin role of docs/nats/least-privilege.conf). Workers never
// update a stream; this is how a changed configuration (replicas, a new
// limit) reaches the server. It prints what it found different first.
func runSetup(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	const prog = "linkpipe setup"
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(stdout)
	nf := addNATSFlags(fs)
	replicas := fs.String(config.Replicas.Flag(), "", config.Replicas.Usage+" ("+config.Replicas.Env+", default "+config.Replicas.Default+")")
	fs.Usage = func() {
		fmt.Fprintln(stdout, "usage: linkpipe setup [--replicas 1|3|5] [--nats-url URL] [--nats-creds F | --nats-nkey F] [--nats-tls-ca F ...]")
		fmt.Fprintln(stdout, "creates or updates linkpipe's streams, consumers and buckets; needs JetStream admin rights")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return worker.BadConfig(err)
	}
	if fs.NArg() > 0 {
		return worker.BadConfig(fmt.Errorf("%s: unexpected argument %q", prog, fs.Arg(0)))
	}
	r := *replicas
	if r == "" {
		r = getenv(config.Replicas.Env)
	}
	if r == "" {
		r = config.Replicas.Default
	}
	if err := config.Replicas.Check(r); err != nil {
		return worker.BadConfig(fmt.Errorf("%s: %s is invalid: %w", prog, config.Replicas.Env, err))
	}
	n, _ := strconv.Atoi(r)
	co, err := nf.options(prog, "setup", getenv)
	if err != nil {
		return err
	}
	nc, js, err := bus.Connect(co)
	if err != nil {
		return fmt.Errorf("%s: %w", prog, err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	o := bus.Options{Replicas: n}
	// What a worker would report; Ensure also creates what is missing.
	diffs, err := bus.Ensure(ctx, js, o, slog.New(slog.DiscardHandler))
	if err != nil {
		return fmt.Errorf("%s: %w", prog, err)
	}
	if err := bus.Setup(ctx, js, o); err != nil {
		return fmt.Errorf("%s: %w", prog, err)
	}
	for _, d := range diffs {
		fmt.Fprintf(stdout, "updated %s %s: %s -> %s\n", d.Of, d.Field, d.Have, d.Want)
	}
	fmt.Fprintf(stdout, "linkpipe setup: %d streams, %d consumers, %d buckets set up with %d replica(s) on %s\n",
		len(bus.StreamConfigs(o)), len(bus.ConsumerConfigs()), len(bus.BucketConfigs(o)), n, nc.ConnectedUrlRedacted())
	return nil
}
