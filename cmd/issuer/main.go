// Command issuer runs linkpipe's issuer worker: it consumes the actions
// practice systems publish to ACTIONS, mints links, records them on SCOPES
// and LINKS, and queues their emails on MAIL. Any number of replicas may run
// against one NATS cluster; each needs its own LINKPIPE_DATA_DIR. Settings
// come from the environment or flags (-h lists them).
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/worker"
)

const prog = "issuer"

func main() { os.Exit(worker.Main(run)) }

// run wires the issuer and runs it until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	vals, err := worker.Parse(prog, args, getenv, stdout, config.IssuerVars()...)
	if err != nil {
		return err
	}
	keys, err := link.ParseKeyring(vals.Get(config.LinkKey))
	if err != nil {
		return worker.BadConfig(fmt.Errorf("%s: %s: %w", prog, config.LinkKey.Env, err))
	}

	p, err := worker.Start(ctx, worker.Settings{Name: prog, Values: vals, LogOutput: os.Stderr})
	if err != nil {
		return err
	}
	defer p.Close()
	db, err := p.OpenStore(prog, issuer.Buckets()...)
	if err != nil {
		return err
	}
	iss, err := worker.NewIssuer(p.Deps(prog), db, keys)
	if err != nil {
		return fmt.Errorf("%s: %w", prog, err)
	}
	// The admin address also serves the support view (explain as a page).
	mux := p.AdminMux()
	worker.MountSupport(mux, p.Deps(prog))
	srv, err := p.Serve(config.AdminAddr, mux)
	if err != nil {
		return err
	}
	p.Ready(stdout, worker.KeyAdmin, srv.Addr())
	return p.Run(ctx, iss.Run)
}
