// Command mailer runs linkpipe's mailer worker: it consumes mail commands
// from the MAIL stream and sends each email once through Amazon SES v2
// (LINKPIPE_MAIL_DRIVER=ses) or into a local inbox (sink), served on the
// admin address at /inbox. Run any number of replicas against one NATS
// cluster. `mailer -h` lists every setting.
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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"

	"github.com/linkpipe/linkpipe/internal/admin"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/practice"
	"github.com/linkpipe/linkpipe/internal/ses"
	"github.com/linkpipe/linkpipe/internal/store"
)

// sinkFrom is the From address of the sink driver when none is set.
const sinkFrom = "linkpipe@localhost.localdomain"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return
	case errors.As(err, new(configError)):
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// configError is a bad setting: exit status 2.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	vals, err := config.Parse("mailer", args, getenv, stdout, config.MailerVars()...)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return configError{err}
	}
	driver, from := vals.Get(config.MailDriver), vals.Get(config.MailFrom)
	if driver == "ses" && from == "" {
		return configError{fmt.Errorf("mailer: %s is required with %s=ses: %s", config.MailFrom.Env, config.MailDriver.Env, config.MailFrom.Usage)}
	}
	if from == "" {
		from = sinkFrom
	}
	keys, err := link.ParseKeyring(vals.Get(config.LinkKey))
	if err != nil {
		return configError{fmt.Errorf("mailer: %s: %w", config.LinkKey.Env, err)}
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("worker", "mailer")

	var sender mailer.Sender
	var sink *mailer.Sink
	switch driver {
	case "sink":
		db, err := store.Open(vals.Get(config.DataDir), "mailer", mailer.SinkBucket)
		if err != nil {
			return fmt.Errorf("mailer: %s: %w", config.DataDir.Env, err)
		}
		defer db.Close()
		if sink, err = mailer.NewSink(db, clock.Real{}); err != nil {
			return err
		}
		sender = sink
	default:
		s, err := ses.New(ctx, sesOptions(vals, getenv)...)
		if err != nil {
			return configError{fmt.Errorf("mailer: SES (%s, %s, ...): %w", config.AWSRegion.Env, config.AWSEndpoint.Env, err)}
		}
		sender = s
	}

	nc, js, err := bus.Connect(vals.Get(config.NATSURL), "linkpipe-mailer")
	if err != nil {
		return err
	}
	defer nc.Close()
	replicas, _ := strconv.Atoi(vals.Get(config.Replicas)) // checked by config
	if err := bus.SetupWhenReady(ctx, js, bus.Options{Replicas: replicas}, log); err != nil {
		return fmt.Errorf("mailer: %w", err)
	}
	dir, err := practice.Open(ctx, js, log)
	if err != nil {
		return fmt.Errorf("mailer: %w", err)
	}
	defer dir.Close()

	reg := admin.NewRegistry()
	m, err := mailer.New(mailer.Config{JS: js, Keys: keys, Practices: dir, Sender: sender, From: from,
		PublicURL: vals.Get(config.PublicURL), Clock: clock.Real{}, Log: log, Metrics: reg})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	admin.Register(mux, reg, admin.NATSReady(nc))
	if sink != nil {
		inbox := sink.Handler("/inbox")
		mux.Handle("/inbox", inbox)
		mux.Handle("/inbox/", inbox)
		mux.Handle("/inbox.json", inbox)
	}
	srv, err := admin.Listen(vals.Get(config.AdminAddr), mux)
	if err != nil {
		return configError{fmt.Errorf("mailer: %s: %w", config.AdminAddr.Env, err)}
	}
	defer srv.Close()
	log.Info("mailer ready", "admin", srv.Addr(), "driver", driver)
	fmt.Fprintf(stdout, "mailer ready admin=%s\n", srv.Addr())
	return m.Run(ctx)
}

// sesOptions hands the AWS settings resolved from flags or the environment
// to the SDK. Set in the environment they are what the SDK reads anyway;
// this makes the flags (and run's getenv) mean the same.
func sesOptions(vals config.Values, getenv func(string) string) []func(*sesv2.Options) {
	var opts []func(*sesv2.Options)
	if r := vals.Get(config.AWSRegion); r != "" {
		opts = append(opts, func(o *sesv2.Options) { o.Region = r })
	}
	if e := vals.Get(config.AWSEndpoint); e != "" {
		opts = append(opts, func(o *sesv2.Options) { o.BaseEndpoint = aws.String(e) })
	}
	key, secret := vals.Get(config.AWSAccessKey), vals.Get(config.AWSSecretKey)
	if key != "" && secret != "" {
		token := getenv("AWS_SESSION_TOKEN")
		opts = append(opts, func(o *sesv2.Options) {
			o.Credentials = credentials.NewStaticCredentialsProvider(key, secret, token)
		})
	}
	return opts
}
