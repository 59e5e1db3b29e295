// Package worker owns what every linkpipe worker process does the same way:
// the exit-code scheme, the garbage collector's target, reading its settings, the JSON logger tagged with
// the worker's name, the NATS connection (client name linkpipe-<worker>),
// setting up the streams within one start-up deadline, the practice
// directory, its own bbolt file, its HTTP server, and on exit a bounded
// flush of the NATS connection before everything is closed in reverse
// order (Process). It also builds each worker from what a process shares
// (Deps: NewIssuer, NewMailer, NewRedeemer, MountInbox), so that the
// separate binaries in cmd/ and the all-in-one dev mode (internal/devstack)
// wire the very same workers.
package worker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/linkpipe/linkpipe/internal/config"
)

// Exit statuses.
const (
	ExitOK     = 0 // ran and stopped cleanly, or -h
	ExitFailed = 1 // anything else
	ExitConfig = 2 // a missing or invalid setting or argument
)

// ErrConfig marks a missing or invalid setting or command-line argument:
// the process exits with status ExitConfig. Match it with errors.Is; the
// error's message names the setting.
var ErrConfig = errors.New("bad configuration")

// configError is an error that is ErrConfig and reads as its cause.
type configError struct{ err error }

func (e configError) Error() string        { return e.err.Error() }
func (e configError) Unwrap() error        { return e.err }
func (e configError) Is(target error) bool { return target == ErrConfig }

// BadConfig marks err as a bad configuration (errors.Is(err, ErrConfig)),
// keeping its message. BadConfig(nil) is nil.
func BadConfig(err error) error {
	if err == nil {
		return nil
	}
	return configError{err}
}

// ExitCode maps what run returned to the process's exit status: ExitOK for
// nil and flag.ErrHelp, ExitConfig for ErrConfig, ExitFailed otherwise.
func ExitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.Is(err, ErrConfig):
		return ExitConfig
	default:
		return ExitFailed
	}
}

// Exit writes a failing err to stderr and returns its exit status; every
// main ends with os.Exit(worker.Exit(os.Stderr, err)).
func Exit(stderr io.Writer, err error) int {
	code := ExitCode(err)
	if code != ExitOK {
		fmt.Fprintln(stderr, err)
	}
	return code
}

// RunFunc is a program's run: its wiring, run until ctx ends.
type RunFunc func(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error

// Main runs run with the process's arguments, environment and stdout until
// SIGINT or SIGTERM, and returns the exit status (see Exit); every main is
// os.Exit(worker.Main(run)). The first signal starts the drain
// (Process.Run); a second one ends the process at once (the default
// handling is restored).
func Main(run RunFunc) int {
	tuneGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	return Exit(os.Stderr, err)
}

// GCPercent is the garbage collector's target (GOGC) in linkpipe's
// processes unless GOGC is set. Go's default, 100, collected the small
// heaps of a worker with hundreds of messages in flight so often that
// allocation and collection took about a quarter of each worker's CPU; at
// 400 the whole pipeline spends about a fifth less CPU per emailed link
// for some tens of MB more memory per process (docs/performance.md). In a
// container with a tight memory limit, set GOMEMLIMIT as well.
const GCPercent = 400

// tuneGC sets GCPercent unless the environment sets GOGC.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
}

// Parse is config.Parse with its errors marked: flag.ErrHelp (after -h has
// listed every setting on out) is returned as is, anything else is
// ErrConfig and names the setting.
func Parse(prog string, args []string, getenv func(string) string, out io.Writer, vars ...config.Var) (config.Values, error) {
	vals, err := config.Parse(prog, args, getenv, out, vars...)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		return nil, BadConfig(err)
	}
	return vals, err
}
