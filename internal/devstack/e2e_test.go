package devstack_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/devstack"
	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/link"
	"github.com/linkpipe/linkpipe/internal/ses"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
	"github.com/linkpipe/linkpipe/internal/ticket"
)

var linkRe = regexp.MustCompile(`https?://[^\s"<>]+/l/[A-Za-z0-9_.-]+`)

func noRedirect() *http.Client {
	return &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func do(t *testing.T, c *http.Client, method, u string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// The first complete path: a practice system publishes a sign-in request;
// the client gets one email through SES (the real SDK against
// aws-ses-v2-local); opening the link twice consumes nothing; confirming
// lands on the portal with a ticket that verifies against the JWKS; a second
// confirmation is refused as used.
func TestSigninEndToEndThroughSES(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	local := sestest.StartLocal(t)
	sender, err := ses.New(ctx, local.Options())
	if err != nil {
		t.Fatal(err)
	}
	st, err := devstack.Start(ctx, devstack.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSPort: -1,
		Sender: sender, From: "no-reply@linkpipe.example"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	js := st.JetStream()

	// Wait until the demo practice's settings (portal under /portal) are in.
	action := &events.SigninRequested{
		Envelope: events.Envelope{EventID: "e2e-1", PracticeID: devstack.DemoPractice},
		Client:   events.Client{ID: "client-9", Email: "pat@example.com", Name: "Pat"},
		ReturnTo: "/messages?box=inbox",
	}
	if _, err := events.Publish(ctx, js, action); err != nil {
		t.Fatal(err)
	}

	var email sestest.Email
	eventually.True(t, 20*time.Second, func() bool {
		for _, e := range local.Emails(t) {
			if len(e.Destination.To) == 1 && e.Destination.To[0] == "pat@example.com" {
				email = e
				return true
			}
		}
		return false
	}, "the email in aws-ses-v2-local")
	if got := len(local.Emails(t)); got != 1 {
		t.Fatalf("%d emails, want 1", got)
	}
	if len(email.ReplyTo) != 1 || email.ReplyTo[0] != "front-desk@demo.example" {
		t.Errorf("Reply-To %v, want the practice's", email.ReplyTo)
	}
	if !strings.Contains(email.Subject, "Demo Practice") {
		t.Errorf("subject %q does not name the practice", email.Subject)
	}
	linkURL := linkRe.FindString(email.Body.Text)
	if linkURL == "" || !strings.Contains(email.Body.HTML, linkURL) {
		t.Fatalf("no link in the email: text %q", email.Body.Text)
	}
	if !strings.HasPrefix(linkURL, st.URL+"/l/") {
		t.Fatalf("link %q is not on the public URL %s", linkURL, st.URL)
	}
	token := strings.TrimPrefix(linkURL, st.URL+"/l/")
	linkID, err := link.ID(token)
	if err != nil {
		t.Fatal(err)
	}

	c := noRedirect()
	for i := range 2 {
		resp, body := do(t, c, http.MethodGet, linkURL)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<form") {
			t.Fatalf("GET %d: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, _ := do(t, c, http.MethodPost, linkURL)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST: %d, want 303", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != st.URL+"/portal/messages" || loc.Query().Get("box") != "inbox" {
		t.Fatalf("redirect to %s, want the portal's /messages?box=inbox", loc)
	}
	_, jwks := do(t, c, http.MethodGet, st.URL+"/.well-known/jwks.json")
	claims, err := ticket.Verify([]byte(jwks), loc.Query().Get("ticket"), ticket.Want{Issuer: st.URL, Audience: st.URL}, time.Now())
	if err != nil {
		t.Fatalf("ticket does not verify against the JWKS: %v", err)
	}
	if claims.Subject != "client-9" || claims.Practice != devstack.DemoPractice || claims.Purpose != events.PurposeSignin ||
		claims.Link != linkID || claims.Issuer != st.URL || claims.ExpiresAt-claims.IssuedAt > 120 || claims.Idle != 900 || claims.ID == "" {
		t.Fatalf("claims %+v", claims)
	}
	// The demo portal verifies it too.
	_, page := do(t, c, http.MethodGet, loc.String())
	if !strings.Contains(page, "Ticket verified") {
		t.Fatalf("demo portal: %s", page)
	}

	resp, body := do(t, c, http.MethodPost, linkURL)
	if resp.StatusCode != http.StatusGone || !strings.Contains(body, `<meta name="linkpipe-reason" content="used">`) {
		t.Fatalf("second POST: %d %s", resp.StatusCode, body)
	}

	// The lifecycle is on LINKS: issued, sent, used.
	r := bus.NewReader(js, bus.StreamLinks)
	for _, typ := range []string{events.TypeIssued, events.TypeSent, events.TypeUsed, events.TypeExpired} {
		eventually.True(t, 20*time.Second, func() bool {
			_, err := r.Last(ctx, events.LinkSubject(linkID, typ))
			if err != nil && !errors.Is(err, bus.ErrNotFound) {
				t.Fatal(err)
			}
			return err == nil
		}, "links."+linkID+"."+typ)
	}
	var used events.LinkEvent
	if _, err := r.LastJSON(ctx, events.LinkSubject(linkID, events.TypeUsed), &used); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(used)
	if used.ClientID != "client-9" || used.PracticeID != devstack.DemoPractice {
		t.Fatalf("used event %s", b)
	}
}
