package main

import (
	"flag"
	"fmt"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// natsFlags are the NATS connection settings of a subcommand that
// connects: -nats-url, -nats-creds, -nats-nkey, -nats-tls-ca,
// -nats-tls-cert, -nats-tls-key, each falling back to its environment
// variable (config.NATSVars) and default.
type natsFlags map[string]*string

func addNATSFlags(fs *flag.FlagSet) natsFlags {
	f := natsFlags{}
	for _, v := range config.NATSVars() {
		f[v.Env] = fs.String(v.Flag(), "", v.Usage+" ("+v.Env+")")
	}
	return f
}

// options resolves and checks the settings (a bad one is a bad
// configuration naming it) and returns the connection options of the
// CLI's client linkpipe-<name>. The CLI keeps the default reply prefix
// _INBOX, which the publisher role of docs/nats/least-privilege.conf may
// read; the admin role may read any.
func (f natsFlags) options(prog, name string, getenv func(string) string) (bus.ConnectOptions, error) {
	vals := config.Values{}
	for _, v := range config.NATSVars() {
		val := *f[v.Env]
		if val == "" {
			val = getenv(v.Env)
		}
		if val == "" {
			val = v.Default
		}
		if val != "" && v.Check != nil {
			if err := v.Check(val); err != nil {
				return bus.ConnectOptions{}, worker.BadConfig(fmt.Errorf("%s: %s is invalid: %w", prog, v.Env, err))
			}
		}
		vals[v.Env] = val
	}
	o, err := worker.ConnectOptions(vals, name)
	if err != nil {
		return o, worker.BadConfig(fmt.Errorf("%s: %w", prog, err))
	}
	// The operator's commands read their replies on their own prefix, so
	// a practice system's credentials (which may read _INBOX.>) cannot
	// read explain's scope states; publish keeps the default _INBOX, the
	// publisher role's.
	o.InboxPrefix = "_INBOX_admin"
	if name == "cli" {
		o.InboxPrefix = ""
	}
	return o, nil
}
