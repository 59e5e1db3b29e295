// Command redeemer serves the clicks on linkpipe's links: the confirm page,
// the redemption that sends the client to the portal with a signed ticket,
// the refusal page with its "Email me a new link" button, the JWKS portals
// verify tickets with, and /healthz, /readyz, /metrics. It also runs the
// projector that publishes the used and revoked lifecycle events. Run any
// number of replicas against one NATS cluster.
//
// Settings come from the environment or flags; -h lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/linkpipe/linkpipe/internal/admin"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/projector"
	"github.com/linkpipe/linkpipe/internal/redeemer"
	"github.com/linkpipe/linkpipe/internal/ticket"
)

// errConfig marks a bad setting: the process exits with status 2.
var errConfig = errors.New("bad configuration")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errConfig):
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// setupWait bounds how long the redeemer waits for NATS at start.
const setupWait = 30 * time.Second

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	vals, err := config.Parse("redeemer", args, getenv, stdout, config.RedeemerVars()...)
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	if err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	seed, err := config.DecodeSeed(vals.Get(config.TicketKey))
	if err != nil {
		return fmt.Errorf("%w: redeemer: %s: %w", errConfig, config.TicketKey.Env, err)
	}
	replicas, _ := strconv.Atoi(vals.Get(config.Replicas))
	publicURL := vals.Get(config.PublicURL)
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("worker", "redeemer")

	nc, js, err := bus.Connect(vals.Get(config.NATSURL), "linkpipe-redeemer")
	if err != nil {
		return fmt.Errorf("redeemer: %w", err)
	}
	defer nc.Close()
	setupCtx, cancel := context.WithTimeout(ctx, setupWait)
	defer cancel()
	if err = bus.SetupWhenReady(setupCtx, js, bus.Options{Replicas: replicas}, log); err != nil {
		return fmt.Errorf("redeemer: %w", err)
	}
	dir, err := practice.Open(setupCtx, js, log)
	if err != nil {
		return fmt.Errorf("redeemer: %w", err)
	}
	defer dir.Close()

	signer, err := ticket.NewSigner(seed, publicURL)
	if err != nil {
		return fmt.Errorf("%w: redeemer: %s: %w", errConfig, config.TicketKey.Env, err)
	}
	reg := admin.NewRegistry()
	rd, err := redeemer.New(redeemer.Config{
		JS: js, NC: nc, Practices: dir, Signer: signer,
		PublicURL: publicURL, PortalURL: vals.Get(config.PortalURL), CookieKey: redeemer.CookieKeyFromSeed(seed),
		Log: log, Metrics: reg,
	})
	if err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	pj, err := projector.New(projector.Config{JS: js, Log: log, Metrics: reg})
	if err != nil {
		return fmt.Errorf("redeemer: %w", err)
	}
	srv, err := admin.Listen(vals.Get(config.HTTPAddr), rd.Handler())
	if err != nil {
		return fmt.Errorf("redeemer: %w", err)
	}
	defer srv.Close()
	fmt.Fprintf(stdout, "redeemer ready http=%s\n", srv.Addr())
	log.Info("redeemer: ready", "http", srv.Addr(), "public_url", publicURL, "kid", signer.Kid())

	// The projector runs until ctx ends.
	if err := pj.Run(ctx); err != nil {
		return err
	}
	return nil
}
