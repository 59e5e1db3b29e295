// Command linkpipe is the all-in-one dev mode and the operator CLI:
//
//	linkpipe dev                      whole pipeline in one process (embedded NATS, mail sink)
//	linkpipe setup                    create or update the streams (admin credentials)
//	linkpipe publish signin ...       publish an action to any NATS server
//	linkpipe explain ...              why a client's link did or did not work
//	linkpipe deadletter list|replay   show and re-drive dead letters
//	linkpipe load ...                 measure emails/s, latencies and CPU per link
//	linkpipe probe URL                container healthcheck: exit 0 on a 2xx answer
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/linkpipe/linkpipe/internal/worker"
)

func main() { os.Exit(worker.Main(run)) }

const usage = `usage: linkpipe <command> [flags]

commands:
  dev       run the whole pipeline in one process: embedded NATS (JetStream on),
            issuer, mailer with a local inbox, redeemer; open http://127.0.0.1:8080/dev
  setup     create or update every stream, consumer and bucket (needs JetStream admin
            rights; workers only create what is missing): linkpipe setup --replicas 3
  publish   publish an action: linkpipe publish signin --practice p --client c --email e
  explain   print the history of a client's or a link's links, for support
  deadletter  list dead letters, or replay them to their original subject:
            linkpipe deadletter list; linkpipe deadletter replay <seq|id>... | --all
  load      measure emails/s end to end, action→sent and redemption latency, CPU per link:
            embedded stack, or -shape processes (nats-server, issuer, mailer, redeemer)
  probe     GET a URL (a worker's /readyz), exit 0 on 2xx: the images' healthcheck

Run "linkpipe <command> -h" for a command's flags.
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "dev":
		return runDev(ctx, args[1:], getenv, stdout)
	case "setup":
		return runSetup(ctx, args[1:], getenv, stdout)
	case "publish":
		return runPublish(ctx, args[1:], getenv, stdout)
	case "explain":
		return runExplain(ctx, args[1:], getenv, stdout)
	case "load":
		return runLoad(ctx, args[1:], getenv, stdout)
	case "deadletter":
		return runDeadletter(ctx, args[1:], getenv, stdout)
	case "probe":
		return runProbe(ctx, args[1:], getenv, stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return flag.ErrHelp
	}
	return worker.BadConfig(fmt.Errorf("linkpipe: unknown command %q\n%s", args[0], usage))
}
