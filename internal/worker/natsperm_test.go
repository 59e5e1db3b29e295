package worker_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/config"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/feedback/sqstest"
	"github.com/linkpipe/linkpipe/internal/history"
	"github.com/linkpipe/linkpipe/internal/issuer"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/suppress"
	"github.com/linkpipe/linkpipe/internal/syncbuf"
	"github.com/linkpipe/linkpipe/internal/worker"
)

// leastPrivilegeConf is the configuration docs/security-nats.md documents.
const leastPrivilegeConf = "../../docs/nats/least-privilege.conf"

// roles of the configuration, each with its own nkey user.
var roleNames = []string{"admin", "publisher", "issuer", "mailer", "redeemer"}

// pki is a throwaway CA, a server certificate for 127.0.0.1 and one client
// certificate, written as PEM files.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "linkpipe test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) ([]byte, []byte) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der, kder
	}
	sc, sk := leaf(2, "nats server", x509.ExtKeyUsageServerAuth)
	cc, ck := leaf(3, "linkpipe client", x509.ExtKeyUsageClientAuth)
	return pki{
		ca:         write("ca.pem", "CERTIFICATE", caDER),
		serverCert: write("server.pem", "CERTIFICATE", sc), serverKey: write("server-key.pem", "EC PRIVATE KEY", sk),
		clientCert: write("client.pem", "CERTIFICATE", cc), clientKey: write("client-key.pem", "EC PRIVATE KEY", ck),
	}
}

// violations collects the server's permission violations.
type violations struct {
	mu    sync.Mutex
	lines []string
}

func (v *violations) Noticef(string, ...any) {}
func (v *violations) Warnf(string, ...any)   {}
func (v *violations) Fatalf(string, ...any)  {}
func (v *violations) Debugf(string, ...any)  {}
func (v *violations) Tracef(string, ...any)  {}
func (v *violations) Errorf(format string, a ...any) {
	line := fmt.Sprintf(format, a...)
	if strings.Contains(line, "Violation") {
		v.mu.Lock()
		v.lines = append(v.lines, line)
		v.mu.Unlock()
	}
}

func (v *violations) take() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	l := v.lines
	v.lines = nil
	return l
}

// lpServer runs docs/nats/least-privilege.conf with TLS and a fresh nkey
// user per role, and returns the NATS settings of each role.
func lpServer(t *testing.T) (*server.Server, map[string]config.Values, *violations) {
	t.Helper()
	dir := t.TempDir()
	p := newPKI(t, dir)
	t.Setenv("LINKPIPE_NATS_SERVER_CERT", p.serverCert)
	t.Setenv("LINKPIPE_NATS_SERVER_KEY", p.serverKey)
	t.Setenv("LINKPIPE_NATS_CA", p.ca)
	seeds := map[string]string{}
	for _, r := range roleNames {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		seeds[r] = filepath.Join(dir, r+".nk")
		if err := os.WriteFile(seeds[r], seed, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("LINKPIPE_NKEY_"+strings.ToUpper(r), pub)
	}
	opts, err := server.ProcessConfigFile(leastPrivilegeConf)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.StoreDir = filepath.Join(dir, "jetstream")
	opts.NoSigs, opts.NoLog = true, false
	opts.ServerName = "linkpipe-least-privilege"
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	v := &violations{}
	srv.SetLoggerV2(v, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.JetStreamEnabled() {
		t.Fatal("JetStream is off")
	}
	url := fmt.Sprintf("tls://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port)
	roles := map[string]config.Values{}
	for _, r := range roleNames {
		roles[r] = config.Values{config.NATSURL.Env: url, config.NATSNKey.Env: seeds[r],
			config.NATSTLSCA.Env: p.ca, config.NATSTLSCert.Env: p.clientCert, config.NATSTLSKey.Env: p.clientKey,
			config.DataDir.Env: t.TempDir(), config.Replicas.Env: "1"}
	}
	return srv, roles, v
}

// connectAs connects with a role's settings as worker name would.
func connectAs(t *testing.T, vals config.Values, name string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	o, err := worker.ConnectOptions(vals, name)
	if err != nil {
		t.Fatal(err)
	}
	if name == "publisher" || name == "admin" {
		o.InboxPrefix = "" // a practice system's own client: the default _INBOX
	}
	nc, js, err := bus.Connect(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

// TestLeastPrivilegeConfiguration runs the whole pipeline against the
// documented least-privilege NATS configuration, over mutual TLS, each
// worker with its own nkey user, and checks that the roles cannot do what
// they must not.
func TestLeastPrivilegeConfiguration(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline; skipped in -short mode")
	}
	srv, roles, viol := lpServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	// Nobody gets in without a user, even with a client certificate.
	anon := maps.Clone(roles["admin"])
	delete(anon, config.NATSNKey.Env)
	o, _ := worker.ConnectOptions(anon, "anonymous")
	if nc, err := nats.Connect(o.URL, nats.RootCAs(o.TLSCA), nats.ClientCert(o.TLSCert, o.TLSKey)); err == nil {
		nc.Close()
		t.Fatal("connected without credentials")
	}

	// (a) The admin sets up the streams; the workers could not.
	_, adminJS := connectAs(t, roles["admin"], "admin")
	if err := bus.Setup(ctx, adminJS, bus.Options{}); err != nil {
		t.Fatal(err)
	}

	// (b) The pipeline, each worker on its own credentials.
	keys, err := link.ParseKeyring("k1:" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
	if err != nil {
		t.Fatal(err)
	}
	seed := []byte("fedcba9876543210fedcba9876543210")
	logs := map[string]*syncbuf.Buffer{}
	start := func(name string) *worker.Process {
		logs[name] = &syncbuf.Buffer{}
		p, err := worker.Start(ctx, worker.Settings{Name: name, Values: roles[name], StartupTimeout: 20 * time.Second,
			LogOutput: logs[name]})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	run := func(name string, r worker.Runner) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r(runCtx); err != nil && runCtx.Err() == nil {
				t.Errorf("%s stopped: %v", name, err)
			}
		}()
	}

	ip := start("issuer")
	db, err := ip.OpenStore("issuer", issuer.Buckets()...)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := worker.NewIssuer(ip.Deps("issuer"), db, keys)
	if err != nil {
		t.Fatal(err)
	}
	run("issuer", iss.Run)

	mp := start("mailer")
	mdb, err := mp.OpenStore("mailer", mailer.SinkBucket)
	if err != nil {
		t.Fatal(err)
	}
	sink, err := mailer.NewSink(mdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	const publicURL = "https://links.example"
	ml, err := worker.NewMailer(mp.Deps("mailer"), worker.MailerSettings{Keys: keys, Sender: sink,
		From: "links@acme.example", PublicURL: publicURL})
	if err != nil {
		t.Fatal(err)
	}
	run("mailer", ml.Run)
	// The SES feedback consumer runs in the mailer's process, on its
	// credentials.
	sesEvents := sqstest.Start(t)
	fc, err := worker.NewFeedback(mp.Deps("feedback"), worker.FeedbackSettings{
		Queue: sqs.New(sqs.Options{}, sesEvents.Options()), QueueURL: sesEvents.URL})
	if err != nil {
		t.Fatal(err)
	}
	run("feedback", fc.Run)

	rp := start("redeemer")
	rd, _, err := worker.NewRedeemer(rp.Deps("redeemer"), worker.RedeemerSettings{Seeds: [][]byte{seed},
		PublicURL: publicURL, PortalURL: "https://portal.example"})
	if err != nil {
		t.Fatal(err)
	}
	pj, err := worker.NewProjector(rp.Deps("projector"))
	if err != nil {
		t.Fatal(err)
	}
	run("redeemer", pj.Run)
	web := httptest.NewServer(rd.Handler())
	defer web.Close()

	// The practice system publishes with the publisher's credentials and
	// follows the lifecycle events live.
	pubNC, pubJS := connectAs(t, roles["publisher"], "publisher")
	lifecycle, err := pubNC.SubscribeSync("links.>")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.Publish(ctx, pubJS, &events.PracticeUpdated{
		Envelope: events.Envelope{EventID: "lp-practice-1", PracticeID: "acme"},
		Practice: events.Practice{Name: "Acme Health", ReplyTo: "desk@acme.example", PortalURL: "https://portal.acme.example"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := events.Publish(ctx, pubJS, &events.SigninRequested{
		Envelope: events.Envelope{EventID: "lp-signin-1", PracticeID: "acme"},
		Client:   events.Client{ID: "client-1", Email: "pat@example.com", Name: "Pat"},
	}); err != nil {
		t.Fatal(err)
	}
	var linkURL string
	eventually.True(t, 30*time.Second, func() bool {
		msgs, err := sink.Messages(0)
		if err != nil || len(msgs) == 0 || len(msgs[0].Links) == 0 {
			return false
		}
		linkURL = msgs[0].Links[0]
		return true
	}, "the sign-in email in the sink")
	token := strings.TrimPrefix(linkURL, publicURL+"/l/")
	linkID, err := link.ID(token)
	if err != nil {
		t.Fatalf("link %q: %v", linkURL, err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Post(web.URL+"/l/"+token, "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "https://portal.acme.example") {
		t.Fatalf("POST: %d to %q, want 303 to the portal", resp.StatusCode, resp.Header.Get("Location"))
	}
	// issued (issuer), sent (mailer), used (projector) reach the publisher.
	want := []string{"issued", "sent", "used"}
	var seen []string
	for len(seen) < len(want) {
		m, err := lifecycle.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatalf("lifecycle events %v, want %v: %v", seen, want, err)
		}
		if typ, ok := strings.CutPrefix(m.Subject, "links."+linkID+"."); ok && slices.Contains(want, typ) && !slices.Contains(seen, typ) {
			seen = append(seen, typ)
		}
	}
	// The support view (worker.MountSupport) reads the ledger on the
	// issuer's and the redeemer's own credentials.
	for name, p := range map[string]*worker.Process{"issuer": ip, "redeemer": rp} {
		tl, err := history.Client(ctx, p.JS, "acme", "client-1")
		if err != nil {
			t.Errorf("%s cannot read the ledger for the support view: %v", name, err)
		} else if st := tl.Statuses(time.Now()); len(st) != 1 || st[0].LinkID != linkID {
			t.Errorf("%s's support view: %+v, want link %s", name, st, linkID)
		}
		if _, err := history.Link(ctx, p.JS, linkID); err != nil {
			t.Errorf("%s cannot read link %s for the support view: %v", name, linkID, err)
		}
	}
	// SES bounces the email: the feedback consumer (mailer credentials)
	// publishes bounced, suppresses the address and dead-letters what it
	// cannot use; the practice lifts the suppression (issuer credentials).
	sent, _ := sink.Messages(0)
	bounce, _ := json.Marshal(map[string]any{"eventType": "Bounce", "mail": map[string]any{"messageId": sent[0].MessageID},
		"bounce": map[string]any{"bounceType": "Permanent", "bounceSubType": "NoEmail",
			"bouncedRecipients": []map[string]string{{"emailAddress": "pat@example.com"}}}})
	sesEvents.Send("not an SES event")
	sesEvents.Send(string(bounce))
	for {
		m, err := lifecycle.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatalf("no bounced event: %v", err)
		}
		if m.Subject == "links."+linkID+".bounced" {
			break
		}
	}
	eventually.True(t, 20*time.Second, func() bool { return sesEvents.Len() == 0 }, "the SES events queue to drain")
	if _, ok, err := suppress.NewList(adminJS).Check(ctx, "pat@example.com"); !ok || err != nil {
		t.Fatalf("not suppressed: %v", err)
	}
	if _, err := events.Publish(ctx, pubJS, &events.AddressUnsuppressed{Envelope: events.Envelope{EventID: "lp-unsup-1", PracticeID: "acme"},
		Email: "pat@example.com"}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 20*time.Second, func() bool {
		_, ok, err := suppress.NewList(adminJS).Check(ctx, "pat@example.com")
		return !ok && err == nil
	}, "the issuer to lift the suppression")
	if v := viol.take(); len(v) != 0 {
		t.Errorf("the pipeline hit permission violations (the configuration lacks a permission):\n%s", strings.Join(v, "\n"))
	}

	// (c) What each role must not do: the publish is refused (no ack, a
	// violation on the server) and nothing lands on the stream.
	redeemerJS := rp.JS // the worker's own connection
	_, mailerJS := connectAs(t, roles["mailer"], "mailer")
	forged, _ := json.Marshal(&events.SigninRequested{Envelope: events.Envelope{EventID: "forged-1", PracticeID: "acme"},
		Client: events.Client{ID: "client-1", Email: "mallory@example.com"}})
	for _, c := range []struct {
		role, subject, stream string
		js                    jetstream.JetStream
	}{
		{"redeemer", "mail.cmd.x", bus.StreamMail, redeemerJS},
		{"redeemer", events.SubjectSigninRequested, bus.StreamActions, redeemerJS},
		{"redeemer", "actions.schedule.reminder.acme.a1.24h", bus.StreamActions, redeemerJS},
		// the client revocation record is the issuer's alone
		{"redeemer", "scope.acme.client-1.revocation", bus.StreamScopes, redeemerJS},
		{"publisher", "mail.cmd.x", bus.StreamMail, pubJS},
		{"publisher", "scope.acme.client-1.signin", bus.StreamScopes, pubJS},
		{"publisher", "links." + linkID + ".used", bus.StreamLinks, pubJS},
		{"publisher", "actions.renewal.requested", bus.StreamActions, pubJS},
		{"mailer", "scope.acme.client-1.signin", bus.StreamScopes, mailerJS},
		{"mailer", "mail.cmd.x", bus.StreamMail, mailerJS},
	} {
		pctx, pcancel := context.WithTimeout(ctx, 700*time.Millisecond)
		_, err := c.js.Publish(pctx, c.subject, forged)
		pcancel()
		if err == nil {
			t.Errorf("%s published to %s", c.role, c.subject)
		}
		if v := viol.take(); len(v) != 1 || !strings.Contains(v[0], "Publish Violation") || !strings.Contains(v[0], c.subject) {
			t.Errorf("%s on %s: server logged %q, want one publish violation", c.role, c.subject, v)
		}
		m, err := bus.NewReader(adminJS, c.stream).Last(ctx, c.subject)
		if err == nil && bytes.Equal(m.Data, forged) {
			t.Errorf("%s's publish to %s is on %s", c.role, c.subject, c.stream)
		} else if err != nil && !errors.Is(err, bus.ErrNotFound) {
			t.Fatal(err)
		}
	}
	// The worker logs what the server refused it, without a secret.
	if l := logs["redeemer"].String(); !strings.Contains(l, `"msg":"NATS connection error"`) || !strings.Contains(l, "mail.cmd.x") {
		t.Errorf("the redeemer did not log its refused publish:\n%s", l)
	}
	// The scope the publisher and the mailer tried to overwrite still
	// holds the redeemer's "used" state.
	var st struct {
		Change string `json:"change"`
	}
	if _, err := bus.NewReader(adminJS, bus.StreamScopes).LastJSON(ctx, "scope.acme.client-1.signin", &st); err != nil || st.Change != "used" {
		t.Errorf("scope state %+v (%v), want used", st, err)
	}
	// The redeemer may request a renewal, on that one action subject.
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	defer pcancel()
	if _, err := redeemerJS.Publish(pctx, "actions.renewal.requested", []byte(`{}`)); err != nil {
		t.Errorf("redeemer cannot publish actions.renewal.requested: %v", err)
	}
	// The support view's grants do not reach the workers' durable
	// consumers: neither the issuer nor the redeemer can delete the
	// projector.
	_, issuerJS := connectAs(t, roles["issuer"], "issuer")
	for name, js := range map[string]jetstream.JetStream{"issuer": issuerJS, "redeemer": redeemerJS} {
		dctx, dcancel := context.WithTimeout(ctx, 700*time.Millisecond)
		err := js.DeleteConsumer(dctx, bus.StreamScopes, "projector")
		dcancel()
		if err == nil {
			t.Errorf("the %s deleted SCOPES.projector", name)
		}
		if v := viol.take(); len(v) == 0 {
			t.Errorf("no violation logged for the %s deleting SCOPES.projector", name)
		}
	}
	// A worker cannot create or change a stream.
	if _, err := redeemerJS.CreateOrUpdateStream(pctx, jetstream.StreamConfig{Name: bus.StreamScopes, Subjects: []string{"scope.>"}, MaxAge: time.Hour}); err == nil {
		t.Error("the redeemer updated SCOPES")
	}
	if v := viol.take(); len(v) == 0 {
		t.Error("no violation logged for the stream update")
	}
	// Each worker connected as its own user.
	connz, err := srv.Connz(&server.ConnzOptions{Username: true})
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{}
	for _, c := range connz.Conns {
		users[c.Name] = c.AuthorizedUser
	}
	for _, w := range []string{"issuer", "mailer", "redeemer"} {
		if users[worker.ClientName(w)] != os.Getenv("LINKPIPE_NKEY_"+strings.ToUpper(w)) {
			t.Errorf("%s connected as %q", w, users[worker.ClientName(w)])
		}
	}
}
