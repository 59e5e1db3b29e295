// Command redeemer serves the clicks on linkpipe's links: the confirm page,
// the redemption that sends the client to the portal with a signed ticket,
// the refusal page with its "Email me a new link" button, the JWKS portals
// verify tickets with, and /healthz, /readyz; /metrics (and /healthz,
// /readyz again) on the admin address. It also runs the
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
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/linkpipe/linkpipe/internal/admin"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/practice"
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
	seeds, err := config.DecodeSeeds(vals.Get(config.TicketKey))
	if err != nil {
		return fmt.Errorf("%w: redeemer: %s: %w", errConfig, config.TicketKey.Env, err)
	}
	proxies, err := config.ParsePrefixes(vals.Get(config.TrustedProxies))
	if err != nil {
		return fmt.Errorf("%w: redeemer: %s: %w", errConfig, config.TrustedProxies.Env, err)
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

	signer, err := ticket.NewRotatingSigner(seeds, publicURL)
	if err != nil {
		return fmt.Errorf("%w: redeemer: %s: %w", errConfig, config.TicketKey.Env, err)
	}
	rd, err := redeemer.New(redeemer.Config{
		JS: js, NC: nc, Practices: dir, Signer: signer,
		PublicURL: publicURL, PortalURL: vals.Get(config.PortalURL), CookieKey: redeemer.CookieKeyFromSeed(seeds[0]),
		Log: log, Metrics: admin.NewRegistry(), TrustedProxies: proxies,
	})
	if err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	ln, err := net.Listen("tcp", vals.Get(config.HTTPAddr))
	if err != nil {
		return fmt.Errorf("redeemer: listen %s: %w", vals.Get(config.HTTPAddr), err)
	}
	hs := &http.Server{}
	rd.ConfigureServer(hs)
	srv := admin.ServeServer(ln, hs)
	defer srv.Close()
	adm, err := admin.Listen(vals.Get(config.AdminAddr), rd.AdminHandler())
	if err != nil {
		return fmt.Errorf("redeemer: %w", err)
	}
	defer adm.Close()
	fmt.Fprintf(stdout, "redeemer ready http=%s admin=%s\n", srv.Addr(), adm.Addr())
	log.Info("redeemer: ready", "http", srv.Addr(), "admin", adm.Addr(), "public_url", publicURL, "kid", signer.Kid())

	// The projector runs until ctx ends.
	if err := rd.Run(ctx); err != nil {
		return err
	}
	return nil
}
