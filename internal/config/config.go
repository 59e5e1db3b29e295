// Package config owns linkpipe's configuration: the environment variables of
// DESIGN.md's table, the flags that mirror them, their defaults, their
// validation, and the -h listing. A missing or invalid setting stops a
// process at start with an error that names the variable.
package config

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/link"
)

// Var is one setting.
type Var struct {
	// Env is the environment variable, e.g. NATS_URL.
	Env string
	// Default applies when neither the flag nor the variable is set.
	Default string
	Usage   string
	// Required settings must be non-empty after defaults.
	Required bool
	// Check validates a non-empty value.
	Check func(string) error
}

// Flag is the flag that mirrors the variable: NATS_URL -> -nats-url,
// LINKPIPE_DATA_DIR -> -data-dir.
func (v Var) Flag() string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(v.Env, "LINKPIPE_")), "_", "-")
}

// The settings of DESIGN.md's configuration table.
var (
	NATSURL = Var{Env: "NATS_URL", Default: "nats://127.0.0.1:4222",
		Usage: "NATS server URL(s), comma-separated; nats://user:password@host or nats://token@host authenticates (never logged)",
		Check: checkNATSURL}
	// The NATS connection's credentials and TLS (docs/security-nats.md).
	NATSCreds = Var{Env: "NATS_CREDS",
		Usage: "NATS .creds file (user JWT and nkey seed) to authenticate with", Check: checkReadableFile}
	NATSNKey = Var{Env: "NATS_NKEY",
		Usage: "file holding the NATS nkey user seed (SU...) to authenticate with", Check: checkReadableFile}
	NATSTLSCA = Var{Env: "NATS_TLS_CA",
		Usage: "PEM file of the CA(s) that sign the NATS server's certificate", Check: checkReadableFile}
	NATSTLSCert = Var{Env: "NATS_TLS_CERT",
		Usage: "PEM client certificate for NATS servers that verify clients (with NATS_TLS_KEY)", Check: checkReadableFile}
	NATSTLSKey = Var{Env: "NATS_TLS_KEY",
		Usage: "PEM private key of NATS_TLS_CERT", Check: checkReadableFile}
	DataDir = Var{Env: "LINKPIPE_DATA_DIR", Default: "./data",
		Usage: "directory of this process's own bbolt file"}
	LinkKey = Var{Env: "LINKPIPE_LINK_KEY", Required: true,
		Usage: "secret tokens are derived from: base64 of 32 bytes, optional kid: prefix, comma-separated newest first for rotation",
		Check: func(s string) error { _, err := link.ParseKeyring(s); return err }}
	PublicURL = Var{Env: "LINKPIPE_PUBLIC_URL", Default: "http://127.0.0.1:8080",
		Usage: "base URL of the redeemer; links are <PUBLIC_URL>/l/<token>", Check: checkBaseURL}
	HTTPAddr = Var{Env: "LINKPIPE_HTTP_ADDR", Default: ":8080",
		Usage: "redeemer listen address", Check: checkAddr}
	AdminAddr = Var{Env: "LINKPIPE_ADMIN_ADDR", Default: ":9090",
		Usage: "listen address of /healthz, /readyz, /metrics", Check: checkAddr}
	// InboxAddr is where the sink driver's inbox (/inbox, which shows live
	// links) listens: loopback unless the operator opens it up.
	InboxAddr = Var{Env: "LINKPIPE_INBOX_ADDR", Default: "127.0.0.1:8025",
		Usage: "listen address of the sink driver's inbox (/inbox, /inbox.json); it answers only a loopback Host or the host of this address or of LINKPIPE_PUBLIC_URL",
		Check: checkAddr}
	MailFrom = Var{Env: "LINKPIPE_MAIL_FROM",
		Usage: "From address of every email (required with the ses driver)",
		Check: func(s string) error { return events.CheckEmail("", s) }}
	MailDriver = Var{Env: "LINKPIPE_MAIL_DRIVER", Default: "ses",
		Usage: "ses (Amazon SES v2) or sink (local inbox in the mailer's bbolt, served on LINKPIPE_INBOX_ADDR)",
		Check: func(s string) error {
			if s != "ses" && s != "sink" {
				return errors.New(`must be "ses" or "sink"`)
			}
			return nil
		}}
	// SESMaxRate overrides the account's MaxSendRate (package pace).
	SESMaxRate = Var{Env: "LINKPIPE_SES_MAX_RATE",
		Usage: "emails/s all mailer replicas together send through SES; unset: the account's MaxSendRate (SES GetAccount, re-read every 5 min)",
		Check: checkPositiveFloat}
	MailConcurrency = Var{Env: "LINKPIPE_MAIL_CONCURRENCY",
		Usage: "emails one mailer keeps in flight; unset: sized from the sending rate (rate x 500 ms + 4, at least 8; 256 with the sink)",
		Check: checkPositiveInt}
	// MailMaxAttempts is the mailer's attempt budget per email.
	MailMaxAttempts = Var{Env: "LINKPIPE_MAIL_MAX_ATTEMPTS", Default: "20",
		Usage: "attempts to send one email before it fails permanently (links.<id>.failed permanent, deadletter.mail)",
		Check: checkPositiveInt}
	PortalURL = Var{Env: "LINKPIPE_PORTAL_URL", Required: true,
		Usage: "portal base URL for practices that set none", Check: checkBaseURL}
	TicketKey = Var{Env: "LINKPIPE_TICKET_KEY", Required: true,
		Usage: "Ed25519 seed(s) (base64, 32 bytes), comma-separated: the first signs portal tickets, all are in the JWKS (rotation)",
		Check: func(s string) error { _, err := DecodeSeeds(s); return err }}
	TrustedProxies = Var{Env: "LINKPIPE_TRUSTED_PROXIES",
		Usage: "comma-separated CIDRs (or addresses) of proxies whose X-Forwarded-For is honoured for per-IP limits",
		Check: func(s string) error { _, err := ParsePrefixes(s); return err }}
	// The AWS SDK reads these itself; they are listed so -h shows them.
	AWSRegion    = Var{Env: "AWS_REGION", Usage: "AWS region of SES (SDK setting)"}
	AWSEndpoint  = Var{Env: "AWS_ENDPOINT_URL_SESV2", Usage: "SES v2 endpoint override (SDK setting), e.g. an emulator"}
	AWSAccessKey = Var{Env: "AWS_ACCESS_KEY_ID", Usage: "AWS access key (SDK setting)"}
	AWSSecretKey = Var{Env: "AWS_SECRET_ACCESS_KEY", Usage: "AWS secret key (SDK setting)"}
)

// Values are the resolved settings, by variable name.
type Values map[string]string

// Get returns the value of a setting.
func (v Values) Get(s Var) string { return v[s.Env] }

// Parse resolves vars from args (flags win), getenv and the defaults, and
// validates them. With -h it writes the listing to out and returns
// flag.ErrHelp. Errors name the variable.
func Parse(prog string, args []string, getenv func(string) string, out io.Writer, vars ...Var) (Values, error) {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(out)
	flags := make(map[string]*string, len(vars))
	for _, v := range vars {
		flags[v.Env] = fs.String(v.Flag(), "", v.Env)
	}
	fs.Usage = func() { Usage(out, prog, vars...) }
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected argument %q (settings are flags or environment variables; -h lists them)", prog, fs.Arg(0))
	}
	vals := Values{}
	for _, v := range vars {
		val := *flags[v.Env]
		if val == "" {
			val = getenv(v.Env)
		}
		if val == "" {
			val = v.Default
		}
		if val == "" && v.Required {
			return nil, fmt.Errorf("%s: %s is required: %s", prog, v.Env, v.Usage)
		}
		if val != "" && v.Check != nil {
			if err := v.Check(val); err != nil {
				return nil, fmt.Errorf("%s: %s is invalid: %v", prog, v.Env, err)
			}
		}
		vals[v.Env] = val
	}
	return vals, nil
}

// Usage writes the -h listing: every setting, its flag, default and meaning.
func Usage(out io.Writer, prog string, vars ...Var) {
	fmt.Fprintf(out, "Usage of %s: settings come from flags or the environment (flags win).\n\n", prog)
	for _, v := range vars {
		def := v.Default
		switch {
		case v.Required:
			def = "required"
		case def == "":
			def = "unset"
		}
		fmt.Fprintf(out, "  %-24s -%-14s %s (default: %s)\n", v.Env, v.Flag(), v.Usage, def)
	}
}

func checkNATSURL(s string) error {
	for _, part := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss") {
			return fmt.Errorf("%q is not a nats:// URL", bus.Redact(part))
		}
	}
	return nil
}

// checkReadableFile checks that s names a file this process can read.
func checkReadableFile(s string) error {
	f, err := os.Open(s)
	if err != nil {
		return fmt.Errorf("cannot read %q: %w", s, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cannot read %q: %w", s, err)
	}
	if st.IsDir() {
		return fmt.Errorf("%q is a directory, not a file", s)
	}
	return nil
}

func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an absolute http(s) URL without query", s)
	}
	return nil
}

func checkPositiveFloat(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f > 0) || math.IsInf(f, 0) {
		return fmt.Errorf("%q is not a positive number", s)
	}
	return nil
}

func checkPositiveInt(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return errors.New("must be a whole number of at least 1")
	}
	return nil
}

func checkAddr(s string) error {
	if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
		return fmt.Errorf("%q is not host:port", s)
	}
	return nil
}

func checkSeed(s string) error {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawURLEncoding.DecodeString(s)
	}
	if err != nil || len(b) != 32 {
		return errors.New("must be base64 of 32 bytes")
	}
	return nil
}

// DecodeSeeds decodes LINKPIPE_TICKET_KEY: one or more seeds,
// comma-separated, the signing one first.
func DecodeSeeds(s string) ([][]byte, error) {
	var out [][]byte
	for i, part := range strings.Split(s, ",") {
		b, err := DecodeSeed(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("seed %d: %w", i+1, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// ParsePrefixes parses a comma-separated list of CIDRs or single
// addresses (LINKPIPE_TRUSTED_PROXIES); empty is none.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		p, err := netip.ParsePrefix(part)
		if err != nil {
			a, aerr := netip.ParseAddr(part)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not a CIDR or an IP address", part)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// DecodeSeed decodes one checked seed of LINKPIPE_TICKET_KEY.
func DecodeSeed(s string) ([]byte, error) {
	if err := checkSeed(s); err != nil {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawURLEncoding.DecodeString(s)
	}
	return b, err
}

// Replicas is linkpipe's own addition to the table: the replication factor
// of the streams a worker creates when it starts first (3 on a cluster).
var Replicas = Var{Env: "LINKPIPE_REPLICAS", Default: "1",
	Usage: "replicas of the JetStream streams linkpipe creates (3 on a NATS cluster)",
	Check: func(s string) error {
		if s != "1" && s != "3" && s != "5" {
			return errors.New("must be 1, 3 or 5")
		}
		return nil
	}}

// LogLevel (DESIGN.md, second wave, Operations) is the lowest level a
// worker logs. Per-link lines (issued, sent, redeemed...) are at debug, so
// a busy pipeline at info does not write a line per email.
var LogLevel = Var{Env: "LINKPIPE_LOG_LEVEL", Default: "info",
	Usage: "lowest level logged: debug, info, warn or error (per-link lines are at debug)",
	Check: func(s string) error { _, err := ParseLogLevel(s); return err }}

// ParseLogLevel parses a value of LINKPIPE_LOG_LEVEL: debug, info, warn or
// error (any case); empty is info.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
}

// ShutdownTimeout bounds a worker's drain on SIGTERM: /readyz answers 503
// at once, the worker stops pulling, what is in flight finishes within it,
// the rest is handed back, and the process exits 0.
var ShutdownTimeout = Var{Env: "LINKPIPE_SHUTDOWN_TIMEOUT", Default: "20s",
	Usage: "on SIGTERM: time the work in flight has to finish (then it is handed back to another replica)",
	Check: func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > 10*time.Minute {
			return errors.New("must be a duration between 1ms and 10m, e.g. 20s")
		}
		return nil
	}}

// NATSVars are the settings of the NATS connection every worker and the
// CLI read: the URL, credentials and TLS.
func NATSVars() []Var {
	return []Var{NATSURL, NATSCreds, NATSNKey, NATSTLSCA, NATSTLSCert, NATSTLSKey}
}

// IssuerVars are the issuer's settings.
func IssuerVars() []Var {
	return append(NATSVars(), DataDir, LinkKey, AdminAddr, Replicas, LogLevel, ShutdownTimeout)
}

// MailerVars are the mailer's settings.
func MailerVars() []Var {
	return append(NATSVars(), DataDir, LinkKey, PublicURL, AdminAddr, MailFrom, MailDriver, InboxAddr, Replicas, LogLevel, ShutdownTimeout,
		MailMaxAttempts, SESMaxRate, MailConcurrency,
		AWSRegion, AWSEndpoint, AWSAccessKey, AWSSecretKey, SESConfigurationSet, SESEventsQueueURL, AWSEndpointSQS)
}

// RedeemerVars are the redeemer's settings.
func RedeemerVars() []Var {
	return append(NATSVars(), DataDir, PublicURL, HTTPAddr, AdminAddr, PortalURL, TicketKey, TrustedProxies, Replicas, LogLevel, ShutdownTimeout)
}
