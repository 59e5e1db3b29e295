package ses_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"

	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/ses"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
)

// capture is an SES v2 endpoint that keeps the body of every SendEmail
// request the real SDK sends.
type capture struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (c *capture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	c.bodies = append(c.bodies, body)
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"MessageId":"0100018c-ses-id-000000"}`)
}

func (c *capture) last(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.bodies) == 0 {
		t.Fatal("no request")
	}
	var in map[string]json.RawMessage
	if err := json.Unmarshal(c.bodies[len(c.bodies)-1], &in); err != nil {
		t.Fatal(err)
	}
	return in
}

// The request the real SDK sends names the configuration set and carries
// the linkpipe_* tags, which SES returns in its delivery, bounce and
// complaint events; a tag value SES would refuse is dropped, not sent.
func TestSendNamesConfigurationSetAndTags(t *testing.T) {
	isolate(t)
	c := &capture{}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	opt := func(o *sesv2.Options) {
		o.Region = "us-east-1"
		o.BaseEndpoint = aws.String(srv.URL)
		o.Credentials = credentials.NewStaticCredentialsProvider("AKIDTEST", "secret-test", "")
	}
	s, err := ses.New(ctx(t), opt)
	if err != nil {
		t.Fatal(err)
	}
	s.WithConfigurationSet("linkpipe-events")
	m := message()
	m.Tags = map[string]string{mail.TagMail: "Labc-signin", mail.TagLink: "Labc", mail.TagPractice: "acme", "bad": "a b"}
	id, err := s.Send(ctx(t), m)
	if err != nil || id != "0100018c-ses-id-000000" {
		t.Fatalf("send: %q %v", id, err)
	}
	in := c.last(t)
	if string(in["ConfigurationSetName"]) != `"linkpipe-events"` {
		t.Errorf("ConfigurationSetName %s", in["ConfigurationSetName"])
	}
	var tags []struct{ Name, Value string }
	if err := json.Unmarshal(in["EmailTags"], &tags); err != nil {
		t.Fatalf("EmailTags %s: %v", in["EmailTags"], err)
	}
	want := []struct{ Name, Value string }{{"linkpipe_link", "Labc"}, {"linkpipe_mail", "Labc-signin"}, {"linkpipe_practice", "acme"}}
	if len(tags) != len(want) {
		t.Fatalf("tags %+v, want %+v", tags, want)
	}
	for i := range want {
		if tags[i] != want[i] {
			t.Fatalf("tags %+v, want %+v", tags, want)
		}
	}

	// Without a configuration set (LINKPIPE_SES_CONFIGURATION_SET unset)
	// and without tags, neither field is sent.
	s2, _ := ses.New(ctx(t), opt)
	if _, err := s2.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	in = c.last(t)
	if _, ok := in["ConfigurationSetName"]; ok {
		t.Errorf("ConfigurationSetName sent: %s", in["ConfigurationSetName"])
	}
	if _, ok := in["EmailTags"]; ok {
		t.Errorf("EmailTags sent: %s", in["EmailTags"])
	}
}

// aws-ses-v2-local (the SES v2 stand-in of docker-compose) accepts an
// email naming a configuration set and carrying the linkpipe_* tags.
func TestLocalAcceptsConfigurationSetAndTags(t *testing.T) {
	isolate(t)
	local := sestest.StartLocal(t)
	s, err := ses.New(ctx(t), local.Options())
	if err != nil {
		t.Fatal(err)
	}
	s.WithConfigurationSet("linkpipe-events")
	m := message()
	m.Tags = map[string]string{mail.TagMail: "Labc-signin", mail.TagLink: "Labc", mail.TagPractice: "acme"}
	if id, err := s.Send(ctx(t), m); err != nil || id == "" {
		t.Fatalf("send: %q %v", id, err)
	}
	if n := len(local.Emails(t)); n != 1 {
		t.Fatalf("%d emails in the emulator, want 1", n)
	}
}
