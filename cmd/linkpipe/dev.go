package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/worker"
)

func runDev(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	httpAddr := config.HTTPAddr
	httpAddr.Default = "127.0.0.1:8080" // dev mode stays on this machine unless told otherwise
	publicURL := config.PublicURL
	publicURL.Default = ""
	publicURL.Usage = "base URL of the pages (default http://<http-addr>)"
	natsPort := config.Var{Env: "LINKPIPE_DEV_NATS_PORT", Default: "4222",
		Usage: "client port of the embedded NATS server (-1: any free port)"}
	vals, err := worker.Parse("linkpipe dev", args, getenv, stdout, config.DataDir, httpAddr, publicURL, natsPort, config.LogLevel)
	if err != nil {
		return err
	}
	port := -1
	if _, err := fmt.Sscan(vals.Get(natsPort), &port); err != nil {
		return worker.BadConfig(fmt.Errorf("linkpipe dev: %s is invalid: %w", natsPort.Env, err))
	}
	level, err := config.ParseLogLevel(vals.Get(config.LogLevel))
	if err != nil {
		return worker.BadConfig(fmt.Errorf("linkpipe dev: %s: %w", config.LogLevel.Env, err))
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	st, err := devstack.Start(ctx, devstack.Config{
		DataDir:   filepath.Join(vals.Get(config.DataDir), "dev"),
		HTTPAddr:  vals.Get(httpAddr),
		NATSPort:  port,
		PublicURL: vals.Get(publicURL),
		Log:       log,
	})
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(stdout, "linkpipe dev is running.\n  open     %s/dev\n  inbox    %s/inbox\n  support  %s/support\n  NATS     %s\nCtrl-C stops it.\n",
		st.URL, st.URL, st.URL, st.NATSURL)
	<-ctx.Done()
	if err := st.Err(); err != nil {
		return err
	}
	return nil
}
