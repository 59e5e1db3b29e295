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
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/worker"
)

const prog = "redeemer"

// Log keys.
const (
	keyPublicURL = "public_url"
	keyAdmin     = "admin"
	keyKid       = "kid"
)

func main() { os.Exit(worker.Main(run)) }

// run wires the redeemer and runs it until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	vals, err := worker.Parse(prog, args, getenv, stdout, config.RedeemerVars()...)
	if err != nil {
		return err
	}
	seeds, err := config.DecodeSeeds(vals.Get(config.TicketKey))
	if err != nil {
		return worker.BadConfig(fmt.Errorf("%s: %s: %w", prog, config.TicketKey.Env, err))
	}
	proxies, err := config.ParsePrefixes(vals.Get(config.TrustedProxies))
	if err != nil {
		return worker.BadConfig(fmt.Errorf("%s: %s: %w", prog, config.TrustedProxies.Env, err))
	}

	p, err := worker.Start(ctx, worker.Settings{Name: prog, Values: vals, LogOutput: os.Stderr})
	if err != nil {
		return err
	}
	defer p.Close()
	publicURL := vals.Get(config.PublicURL)
	rd, signer, err := worker.NewRedeemer(p.Deps(prog), worker.RedeemerSettings{
		Seeds: seeds, PublicURL: publicURL, PortalURL: vals.Get(config.PortalURL), TrustedProxies: proxies,
	})
	if err != nil {
		return worker.BadConfig(fmt.Errorf("%s: %w", prog, err))
	}
	// The public address: link routes, JWKS, /healthz, /readyz, within
	// the redeemer's timeouts and limits. /metrics is on the admin address.
	hs := &http.Server{}
	rd.ConfigureServer(hs)
	srv, err := p.ServeServer(config.HTTPAddr, hs)
	if err != nil {
		return err
	}
	// The admin address also serves the support view (explain as a page).
	mux := p.AdminMux()
	worker.MountSupport(mux, p.Deps(prog))
	adm, err := p.Serve(config.AdminAddr, mux)
	if err != nil {
		return err
	}
	p.ReadyAt(stdout, []worker.Addr{{What: worker.KeyHTTP, Addr: srv.Addr()}, {What: keyAdmin, Addr: adm.Addr()}},
		keyPublicURL, publicURL, keyKid, signer.Kid())

	// The projector (SCOPES -> used/revoked events) runs in this process
	// until ctx ends.
	pj, err := worker.NewProjector(p.Deps("projector"))
	if err != nil {
		return err
	}
	return p.Run(ctx, pj.Run)
}
