// Command mailer runs linkpipe's mailer worker: it consumes mail commands
// from the MAIL stream and sends each email once through Amazon SES v2
// (LINKPIPE_MAIL_DRIVER=ses) or into a local inbox (sink), served at /inbox
// on its own address, LINKPIPE_INBOX_ADDR (default 127.0.0.1:8025), to
// requests whose Host is a loopback name or the configured host only. Run
// any number of replicas against one NATS cluster: with SES they share the
// account's sending rate (package pace; LINKPIPE_SES_MAX_RATE overrides
// GetAccount's MaxSendRate). `mailer -h` lists every setting.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/linkpipe/linkpipe/internal/admin"
	"github.com/linkpipe/linkpipe/internal/clock"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/feedback"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/pace"
	"github.com/linkpipe/linkpipe/internal/ses"
	"github.com/linkpipe/linkpipe/internal/worker"
)

const prog = "mailer"

// sinkFrom is the From address of the sink driver when none is set.
const sinkFrom = "linkpipe@localhost.localdomain"

// Log keys; keyInbox also labels the inbox address in the ready line.
const (
	keyDriver = "driver"
	keyInbox  = "inbox"
)

func main() { os.Exit(worker.Main(run)) }

// run wires the mailer and runs it until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	vals, err := worker.Parse(prog, args, getenv, stdout, config.MailerVars()...)
	if err != nil {
		return err
	}
	driver, from := vals.Get(config.MailDriver), vals.Get(config.MailFrom)
	if driver == "ses" && from == "" {
		return worker.BadConfig(fmt.Errorf("%s: %s is required with %s=ses: %s", prog, config.MailFrom.Env, config.MailDriver.Env, config.MailFrom.Usage))
	}
	if from == "" {
		from = sinkFrom
	}
	maxAttempts, err := strconv.Atoi(vals.Get(config.MailMaxAttempts))
	if err != nil {
		return worker.BadConfig(fmt.Errorf("%s: %s: %w", prog, config.MailMaxAttempts.Env, err))
	}
	keys, err := link.ParseKeyring(vals.Get(config.LinkKey))
	if err != nil {
		return worker.BadConfig(fmt.Errorf("%s: %s: %w", prog, config.LinkKey.Env, err))
	}
	maxRate, concurrency, err := paceSettings(vals)
	if err != nil {
		return worker.BadConfig(fmt.Errorf("%s: %w", prog, err))
	}
	var sender mailer.Sender
	var sesSender *ses.Sender
	if driver != "sink" {
		// A connection kept for every email that can be in flight.
		conns := concurrency
		if conns == 0 {
			conns = pace.MaxConcurrency
		}
		s, err := ses.New(ctx, append([]func(*sesv2.Options){ses.IdleConns(conns)}, sesOptions(vals, getenv)...)...)
		if err != nil {
			return worker.BadConfig(fmt.Errorf("%s: SES (%s, %s, ...): %w", prog, config.AWSRegion.Env, config.AWSEndpoint.Env, err))
		}
		s.WithConfigurationSet(vals.Get(config.SESConfigurationSet))
		sender, sesSender = s, s
	}

	p, err := worker.Start(ctx, worker.Settings{Name: prog, Values: vals, LogOutput: os.Stderr})
	if err != nil {
		return err
	}
	defer p.Close()
	addrs := []worker.Addr{}
	var inbox *http.ServeMux
	if driver == "sink" {
		db, err := p.OpenStore(prog, mailer.SinkBucket)
		if err != nil {
			return err
		}
		sink, err := mailer.NewSink(db, clock.Real{})
		if err != nil {
			return fmt.Errorf("%s: %w", prog, err)
		}
		sender = sink
		if concurrency == 0 {
			concurrency = mailer.SinkConcurrency
		}
		inbox = http.NewServeMux()
		worker.MountInbox(inbox, sink)
	}
	settings := worker.MailerSettings{Keys: keys, Sender: sender, From: from, PublicURL: vals.Get(config.PublicURL),
		MaxAttempts: maxAttempts, Concurrency: concurrency}
	if sesSender != nil {
		// All replicas together within the account's rate; in flight,
		// enough for that rate unless configured.
		lim, err := worker.NewPacer(ctx, p.Deps(prog), maxRate, sesSender)
		if err != nil {
			return fmt.Errorf("%s: %w", prog, err)
		}
		defer lim.Close()
		settings.Pacer = lim
		if settings.Concurrency == 0 {
			settings.Concurrency = pace.Concurrency(lim.Rate())
		}
		// On the wire, what the pace needs at SES's measured latency.
		settings.Sender = gatedSender{next: sesSender, gate: lim.Gate(settings.Concurrency)}
	}
	m, err := worker.NewMailer(p.Deps(prog), settings)
	if err != nil {
		return fmt.Errorf("%s: %w", prog, err)
	}
	run, err := withFeedback(ctx, p, vals, m.Run)
	if err != nil {
		return err
	}
	// Not ready while SES refuses every send (sending paused, account
	// suspended, ...): the mailer keeps retrying, /readyz tells the operator.
	srv, err := p.Serve(config.AdminAddr, p.AdminMux(m.Ready))
	if err != nil {
		return err
	}
	addrs = append(addrs, worker.Addr{What: worker.KeyAdmin, Addr: srv.Addr()})
	if inbox != nil {
		// The inbox shows live links: on its own listener (loopback by
		// default, never the admin address that metrics scrapers reach),
		// and only for a Host that DNS rebinding cannot forge.
		in, err := p.Serve(config.InboxAddr, admin.LocalHostsOnly(inbox,
			admin.HostOf(vals.Get(config.InboxAddr)), admin.HostOf(vals.Get(config.PublicURL))))
		if err != nil {
			return err
		}
		addrs = append(addrs, worker.Addr{What: keyInbox, Addr: in.Addr()})
	}
	p.ReadyAt(stdout, addrs, keyDriver, driver)
	return p.Run(ctx, run)
}

// withFeedback adds the SES feedback consumer to the mailer's runner when
// LINKPIPE_SES_EVENTS_QUEUE_URL is set (AWS_REGION, AWS_ENDPOINT_URL_SQS
// and the credentials are the SDK's own settings).
func withFeedback(ctx context.Context, p *worker.Process, vals config.Values, mailer worker.Runner) (worker.Runner, error) {
	url := vals.Get(config.SESEventsQueueURL)
	if url == "" {
		return mailer, nil
	}
	var opts []func(*sqs.Options)
	if r := vals.Get(config.AWSRegion); r != "" {
		opts = append(opts, func(o *sqs.Options) { o.Region = r })
	}
	if e := vals.Get(config.AWSEndpointSQS); e != "" {
		opts = append(opts, func(o *sqs.Options) { o.BaseEndpoint = aws.String(e) })
	}
	if key, secret := vals.Get(config.AWSAccessKey), vals.Get(config.AWSSecretKey); key != "" && secret != "" {
		opts = append(opts, func(o *sqs.Options) { o.Credentials = credentials.NewStaticCredentialsProvider(key, secret, "") })
	}
	client, err := feedback.NewClient(ctx, opts...)
	if err != nil {
		return nil, worker.BadConfig(fmt.Errorf("%s: SQS (%s, %s, ...): %w", prog, config.SESEventsQueueURL.Env, config.AWSEndpointSQS.Env, err))
	}
	fc, err := worker.NewFeedback(p.Deps("feedback"), worker.FeedbackSettings{Queue: client, QueueURL: url})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prog, err)
	}
	return worker.Together(mailer, fc.Run), nil
}

// paceSettings are LINKPIPE_SES_MAX_RATE (0: unset) and
// LINKPIPE_MAIL_CONCURRENCY (0: unset), checked by config.
func paceSettings(vals config.Values) (float64, int, error) {
	var maxRate float64
	var concurrency int
	var err error
	if v := vals.Get(config.SESMaxRate); v != "" {
		if maxRate, err = strconv.ParseFloat(v, 64); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", config.SESMaxRate.Env, err)
		}
	}
	if v := vals.Get(config.MailConcurrency); v != "" {
		if concurrency, err = strconv.Atoi(v); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", config.MailConcurrency.Env, err)
		}
	}
	return maxRate, concurrency, nil
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
