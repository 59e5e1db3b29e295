package bus

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ConnectOptions say how to reach and authenticate to NATS. Only URL is
// required; user and password or a token may be in the URL
// (nats://user:pass@host:4222, nats://token@host:4222), which nats.go
// handles. Every file is read when connecting.
type ConnectOptions struct {
	// URL is one or more server URLs, comma-separated (NATS_URL).
	URL string
	// Name is the client name the server shows (linkpipe-<worker>).
	Name string
	// Creds is a .creds file: a user JWT and its nkey seed (NATS_CREDS).
	Creds string
	// NKeySeedFile is a file holding an nkey user seed (NATS_NKEY).
	NKeySeedFile string
	// TLSCA is a PEM file of the CAs that sign the server's certificate
	// (NATS_TLS_CA); TLSCert and TLSKey a client certificate and its key
	// for servers that verify clients (NATS_TLS_CERT, NATS_TLS_KEY).
	TLSCA   string
	TLSCert string
	TLSKey  string
	// InboxPrefix replaces _INBOX as the prefix of the reply subjects this
	// connection subscribes to, so a least-privilege server configuration
	// can let each role read its own replies only (see
	// docs/security-nats.md). Empty means _INBOX.
	InboxPrefix string
	// Log receives the connection's asynchronous errors (a permissions
	// violation, a slow consumer) at error level; nil leaves nats.go's
	// default (a line on stderr).
	Log *slog.Logger
}

// natsOptions turns o into nats.go options (reconnects forever).
func (o ConnectOptions) natsOptions() ([]nats.Option, error) {
	opts := []nats.Option{nats.Name(o.Name), nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond), nats.RetryOnFailedConnect(true)}
	if o.Creds != "" && o.NKeySeedFile != "" {
		return nil, fmt.Errorf("bus: a .creds file and an nkey seed file are exclusive")
	}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.NKeySeedFile != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("bus: nkey seed %s: %w", o.NKeySeedFile, err)
		}
		opts = append(opts, opt)
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, fmt.Errorf("bus: a TLS client certificate needs both the certificate and its key")
	}
	if o.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey); err != nil {
			return nil, fmt.Errorf("bus: TLS client certificate %s: %w", o.TLSCert, err)
		}
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	if log := o.Log; log != nil {
		urls := o.URL
		opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("NATS connection error", keySubject, subj, keyErr, RedactIn(err.Error(), urls))
		}))
	}
	return opts, nil
}

// Connect dials NATS with o, reconnecting forever. Errors show the URL
// redacted (Redact): a password in it is never printed.
func Connect(o ConnectOptions) (*nats.Conn, jetstream.JetStream, error) {
	opts, err := o.natsOptions()
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("bus: connect %s: %w", Redact(o.URL), redactedErr{err, o.URL})
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	return nc, js, nil
}

// redactedErr is an error whose message has every secret of a URL list
// replaced, and which still unwraps to the original.
type redactedErr struct {
	err  error
	urls string
}

func (e redactedErr) Error() string { return RedactIn(e.err.Error(), e.urls) }
func (e redactedErr) Unwrap() error { return e.err }

// Redact returns the server URL(s) of NATS_URL with the userinfo of each
// replaced: a user keeps its name and loses its password
// (nats://alice:xxxxx@host), a token is replaced whole
// (nats://xxxxx@host). Anything that does not parse as a URL is
// replaced whole, since it might be a secret.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		parts[i] = redactOne(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

const redacted = "xxxxx"

func redactOne(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return redacted
	}
	if _, hasPass := u.User.Password(); hasPass {
		u.User = url.UserPassword(u.User.Username(), redacted)
	} else {
		u.User = url.User(redacted)
	}
	return u.String()
}

// RedactIn replaces, in s, every secret of the URL list urls (passwords,
// tokens, and any URL that carries them) with its redacted form.
func RedactIn(s, urls string) string {
	for _, p := range strings.Split(urls, ",") {
		p = strings.TrimSpace(p)
		if !strings.Contains(p, "@") {
			continue
		}
		s = strings.ReplaceAll(s, p, redactOne(p))
		if u, err := url.Parse(p); err == nil && u.User != nil {
			secret, ok := u.User.Password()
			if !ok {
				secret = u.User.Username()
			}
			if secret != "" {
				s = strings.ReplaceAll(s, secret, redacted)
			}
		}
	}
	return s
}
