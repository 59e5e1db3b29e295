// Command issuer runs linkpipe's issuer worker: it consumes the actions
// practice systems publish to ACTIONS, mints links, records them on SCOPES
// and LINKS, and queues their emails on MAIL. Any number of replicas may run
// against one NATS cluster; each needs its own LINKPIPE_DATA_DIR. Settings
// come from the environment or flags (-h lists them).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/linkpipe/linkpipe/internal/admin"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/store"
)

const prog = "issuer"

// Log keys.
const (
	keyWorker    = "worker"
	keyAdminAddr = "admin_addr"
	keyNATSURL   = "nats_url"
	keyErr       = "err"
)

// usageError is a bad command line or setting: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run wires the issuer and runs it until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	vals, err := config.Parse(prog, args, getenv, stdout, config.IssuerVars()...)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return usageError{err}
	}
	keys, err := link.ParseKeyring(vals.Get(config.LinkKey))
	if err != nil {
		return usageError{fmt.Errorf("%s: %s: %w", prog, config.LinkKey.Env, err)}
	}
	replicas, err := strconv.Atoi(vals.Get(config.Replicas))
	if err != nil {
		return usageError{fmt.Errorf("%s: %s: %w", prog, config.Replicas.Env, err)}
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With(keyWorker, prog)

	nc, js, err := bus.Connect(vals.Get(config.NATSURL), prog)
	if err != nil {
		return fmt.Errorf("%s: %w", prog, err)
	}
	defer nc.Close()
	setupCtx, cancel := context.WithTimeout(ctx, time.Minute)
	err = bus.SetupWhenReady(setupCtx, js, bus.Options{Replicas: replicas}, log)
	cancel()
	if err != nil {
		return fmt.Errorf("%s: %w", prog, err)
	}

	db, err := store.Open(vals.Get(config.DataDir), prog, issuer.Buckets()...)
	if err != nil {
		return fmt.Errorf("%s: %w", prog, err)
	}
	defer db.Close()

	dir, err := practice.Open(ctx, js, log)
	if err != nil {
		return fmt.Errorf("%s: %w", prog, err)
	}
	defer dir.Close()

	reg := admin.NewRegistry()
	iss, err := issuer.New(issuer.Config{
		JS: js, DB: db, Keys: keys, Practices: dir, Log: log, Metrics: reg,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", prog, err)
	}

	mux := http.NewServeMux()
	admin.Register(mux, reg, admin.NATSReady(nc))
	srv, err := admin.Listen(vals.Get(config.AdminAddr), mux)
	if err != nil {
		return fmt.Errorf("%s: %w", prog, err)
	}
	defer srv.Close()

	log.Info("issuer ready", keyAdminAddr, srv.Addr(), keyNATSURL, nc.ConnectedUrlRedacted())
	fmt.Fprintf(stdout, "issuer ready admin=%s\n", srv.Addr())
	err = iss.Run(ctx)
	log.Info("issuer stopping", keyErr, err)
	if err != nil {
		return fmt.Errorf("%s: %w", prog, err)
	}
	// Let the acks of the last messages reach the server before closing.
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		log.Warn("issuer flush on exit", keyErr, err)
	}
	return nil
}
