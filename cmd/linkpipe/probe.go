package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/linkpipe/linkpipe/internal/worker"
)

// probeTimeout bounds `linkpipe probe`.
const probeTimeout = 3 * time.Second

// errProbe: the probed endpoint did not answer 2xx.
var errProbe = errors.New("linkpipe probe: not healthy")

// runProbe GETs an http URL (a worker's /readyz or /healthz) and succeeds
// on a 2xx answer: the container healthcheck of the distroless images,
// which have no shell, curl or wget.
func runProbe(ctx context.Context, args []string, _ func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("linkpipe probe", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintln(stdout, "usage: linkpipe probe http://127.0.0.1:9090/readyz")
		fmt.Fprintln(stdout, "exits 0 when the URL answers 2xx within 3s, 1 otherwise (container healthchecks)")
	}
	if err := fs.Parse(args); err != nil {
		return worker.BadConfig(err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return worker.BadConfig(errors.New("linkpipe probe: give one URL"))
	}
	u, err := url.Parse(fs.Arg(0))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return worker.BadConfig(fmt.Errorf("linkpipe probe: %q is not an http(s) URL", fs.Arg(0)))
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("linkpipe probe: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", errProbe, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%w: %s answered %d: %s", errProbe, u.Redacted(), resp.StatusCode, body)
	}
	return nil
}
