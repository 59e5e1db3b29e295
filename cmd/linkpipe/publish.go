package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/worker"
)

const publishUsage = `usage:
  linkpipe publish signin   --practice P --client C --email E [--name N] [--return-to /path] [--event-id ID]
  linkpipe publish document --practice P --client C --email E --document D --title T --share S [--event-id ID]
  linkpipe publish practice --practice P --name N --reply-to E --portal-url URL [--signin-ttl 24h] [--document-ttl 72h] [--telehealth-grace 30m]
  linkpipe publish unsuppress --practice P --email E [--event-id ID]   (lifts a bounce's or complaint's suppression, for every practice)
  linkpipe publish raw      --subject actions.x.y --file event.json   (or --file - for standard input)
flags common to all: --nats-url (NATS_URL, default nats://127.0.0.1:4222), --nats-creds (NATS_CREDS),
  --nats-nkey (NATS_NKEY), --nats-tls-ca (NATS_TLS_CA), --nats-tls-cert (NATS_TLS_CERT), --nats-tls-key (NATS_TLS_KEY)
`

func newEventID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "cli-" + hex.EncodeToString(b)
}

func runPublish(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, publishUsage)
		return flag.ErrHelp
	}
	kind := args[0]
	fs := flag.NewFlagSet("linkpipe publish "+kind, flag.ContinueOnError)
	fs.SetOutput(stdout)
	nf := addNATSFlags(fs)
	practice := fs.String("practice", "", "practice id")
	clientID := fs.String("client", "", "client id")
	email := fs.String("email", "", "client email")
	name := fs.String("name", "", "client name")
	returnTo := fs.String("return-to", "", "portal path to land on (sign-in)")
	eventID := fs.String("event-id", "", "event id (default: random)")
	docID := fs.String("document", "", "document id")
	title := fs.String("title", "", "document title")
	share := fs.String("share", "", "share id")
	pname := fs.String("pname", "", "practice name (alias of --name for practice)")
	replyTo := fs.String("reply-to", "", "practice reply-to address")
	portalURL := fs.String("portal-url", "", "practice portal URL")
	signinTTL := fs.String("signin-ttl", "", "practice sign-in link lifetime")
	documentTTL := fs.String("document-ttl", "", "practice document link lifetime")
	grace := fs.String("telehealth-grace", "", "practice telehealth grace after the appointment")
	subject := fs.String("subject", "", "subject (raw)")
	file := fs.String("file", "", "JSON file, - for stdin (raw)")
	if err := fs.Parse(args[1:]); err != nil {
		return worker.BadConfig(err)
	}
	co, err := nf.options("linkpipe publish", "cli", getenv)
	if err != nil {
		return err
	}
	if *eventID == "" {
		*eventID = newEventID()
	}
	env := events.Envelope{EventID: *eventID, PracticeID: *practice}
	client := events.Client{ID: *clientID, Email: *email, Name: *name}

	var action events.Action
	var raw []byte
	switch kind {
	case "signin":
		action = &events.SigninRequested{Envelope: env, Client: client, ReturnTo: *returnTo}
	case "document":
		action = &events.DocumentShared{Envelope: env, Client: client,
			Document: events.Document{ID: *docID, Title: *title}, ShareID: *share}
	case "practice":
		n := *pname
		if n == "" {
			n = *name
		}
		pu := &events.PracticeUpdated{Envelope: env, Practice: events.Practice{Name: n, ReplyTo: *replyTo, PortalURL: *portalURL}}
		if *signinTTL != "" || *documentTTL != "" || *grace != "" {
			pu.Policy = &events.Policy{SigninTTL: *signinTTL, DocumentTTL: *documentTTL, TelehealthGrace: *grace}
		}
		action = pu
	case "unsuppress":
		action = &events.AddressUnsuppressed{Envelope: env, Email: *email}
	case "raw":
		if *file == "-" {
			raw, err = io.ReadAll(io.LimitReader(os.Stdin, 2<<20))
		} else {
			raw, err = os.ReadFile(*file)
		}
		if err != nil {
			return worker.BadConfig(fmt.Errorf("linkpipe publish: %w", err))
		}
		a, err := events.Decode(*subject, raw)
		if err != nil {
			return worker.BadConfig(fmt.Errorf("linkpipe publish: %w", err))
		}
		action = a
	default:
		return worker.BadConfig(fmt.Errorf("linkpipe publish: unknown action %q\n%s", kind, publishUsage))
	}
	if err := action.Validate(); err != nil {
		return worker.BadConfig(fmt.Errorf("linkpipe publish %s: %w", kind, err))
	}
	nc, js, err := bus.Connect(co)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ack, err := events.Publish(ctx, js, action)
	if err != nil {
		return err
	}
	out, _ := json.Marshal(map[string]any{"subject": action.Subject(), "event_id": events.EnvelopeOf(action).EventID,
		"stream": ack.Stream, "seq": ack.Sequence, "duplicate": ack.Duplicate})
	fmt.Fprintln(stdout, string(out))
	return nil
}
