package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/history"
	"github.com/linkpipe/linkpipe/internal/worker"
)

func runExplain(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("linkpipe explain", flag.ContinueOnError)
	fs.SetOutput(stdout)
	nf := addNATSFlags(fs)
	practice := fs.String("practice", "", "practice id (with --client)")
	client := fs.String("client", "", "client id: every link of this client")
	linkID := fs.String("link", "", "link id: one link and its scope")
	fs.Usage = func() {
		fmt.Fprintln(stdout, "usage: linkpipe explain --practice P --client C | --link L [--nats-url URL] [--nats-creds F | --nats-nkey F] [--nats-tls-ca F ...]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return worker.BadConfig(err)
	}
	if (*linkID == "") == (*client == "" || *practice == "") {
		fs.Usage()
		return worker.BadConfig(errors.New("linkpipe explain: give --practice and --client, or --link"))
	}
	co, err := nf.options("linkpipe explain", "explain", getenv)
	if err != nil {
		return err
	}
	nc, js, err := bus.Connect(co)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var tl *history.Timeline
	if *linkID != "" {
		tl, err = history.Link(ctx, js, *linkID)
	} else {
		tl, err = history.Client(ctx, js, *practice, *client)
	}
	if err != nil {
		return fmt.Errorf("linkpipe explain: %w", err)
	}
	tl.Print(stdout, time.Now())
	return nil
}
