package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/linkpipe/linkpipe/internal/eventually"
	"github.com/linkpipe/linkpipe/internal/syncbuf"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func get(t *testing.T, c *http.Client, method, u string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDevPublishExplain runs the real program: `linkpipe dev` on a temp dir
// and free ports, `linkpipe publish` against its NATS, a click, and
// `linkpipe explain`, which must tell the story: two links, the first
// superseded by the second, the second sent and used.
func TestDevPublishExplain(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncbuf.Buffer
	done := make(chan error, 1)
	dataDir := t.TempDir()
	go func() {
		done <- run(ctx, []string{"dev", "-http-addr", "127.0.0.1:0"}, env(map[string]string{
			"LINKPIPE_DATA_DIR": dataDir, "LINKPIPE_DEV_NATS_PORT": "-1"}), &out)
	}()
	urlRe := regexp.MustCompile(`open\s+(http://\S+)/dev`)
	natsRe := regexp.MustCompile(`NATS\s+(nats://\S+)`)
	eventually.True(t, 20*time.Second, func() bool { return natsRe.MatchString(out.String()) }, "dev to start")
	base := urlRe.FindStringSubmatch(out.String())[1]
	natsURL := natsRe.FindStringSubmatch(out.String())[1]
	e := env(map[string]string{"NATS_URL": natsURL})

	c := &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if code, body := get(t, c, http.MethodGet, base+"/dev"); code != 200 || !strings.Contains(body, "Send a sign-in link") {
		t.Fatalf("/dev: %d", code)
	}

	for i := range 2 {
		var pout bytes.Buffer
		if err := run(ctx, []string{"publish", "signin", "--practice", "demo", "--client", "c-42",
			"--email", "sam@example.com", "--event-id", fmt.Sprintf("explain-%d", i)}, e, &pout); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(pout.String(), `"seq"`) {
			t.Fatalf("publish printed %q", pout.String())
		}
		// Wait for this request's email before publishing the next one,
		// so the second link is the newer.
		eventually.True(t, 20*time.Second, func() bool {
			_, inbox := get(t, c, http.MethodGet, base+"/inbox.json")
			return strings.Count(inbox, "sam@example.com") >= i+1
		}, "email")
	}
	_, inbox := get(t, c, http.MethodGet, base+"/inbox.json")
	links := regexp.MustCompile(regexp.QuoteMeta(base)+`/l/[A-Za-z0-9_.-]+`).FindAllString(inbox, -1)
	if len(links) < 2 {
		t.Fatalf("links in inbox: %v", links)
	}
	// Redeem the newest (the inbox lists newest first) and try the oldest.
	uniq := []string{}
	for _, l := range links {
		if len(uniq) == 0 || uniq[len(uniq)-1] != l {
			uniq = append(uniq, l)
		}
	}
	newest, oldest := uniq[0], uniq[len(uniq)-1]
	if code, _ := get(t, c, http.MethodPost, newest); code != http.StatusSeeOther {
		t.Fatalf("redeem newest: %d", code)
	}
	if code, body := get(t, c, http.MethodPost, oldest); code != http.StatusGone || !strings.Contains(body, `content="superseded"`) {
		t.Fatalf("oldest: %d %s", code, body)
	}

	var story string
	eventually.True(t, 20*time.Second, func() bool {
		var eout bytes.Buffer
		if err := run(ctx, []string{"explain", "--practice", "demo", "--client", "c-42"}, e, &eout); err != nil {
			t.Fatal(err)
		}
		story = eout.String()
		return strings.Contains(story, " used ")
	}, "explain to show the use")
	t.Log(story)
	for _, want := range []string{"issued", "sent", "supersedes", "click refused: superseded", "scope:used", "c-42.signin", "refused (superseded by "} {
		if !strings.Contains(story, want) {
			t.Errorf("explain output lacks %q:\n%s", want, story)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev stopped with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("dev did not stop")
	}
}

func TestUsageAndBadInput(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), nil, env(nil), &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "dev") {
		t.Fatalf("no args: %v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"nope"}, env(nil), &out); err == nil {
		t.Fatal("unknown command accepted")
	}
	out.Reset()
	if err := run(context.Background(), []string{"dev", "-h"}, env(nil), &out); !errors.Is(err, flag.ErrHelp) ||
		!strings.Contains(out.String(), "LINKPIPE_HTTP_ADDR") || !strings.Contains(out.String(), "LINKPIPE_DATA_DIR") {
		t.Fatalf("dev -h: %v %q", err, out.String())
	}
	// publish validates before it connects: a CRLF in the email is refused
	// with the field named, and no server is needed to learn it.
	err := run(context.Background(), []string{"publish", "signin", "--practice", "p", "--client", "c",
		"--email", "a@b.co\r\nBcc: x@evil.example", "--nats-url", "nats://127.0.0.1:1"}, env(nil), &out)
	if err == nil || !strings.Contains(err.Error(), "client.email") {
		t.Fatalf("CRLF email: %v", err)
	}
	if err := run(context.Background(), []string{"explain", "--client", "c"}, env(nil), &out); err == nil {
		t.Fatal("explain without practice accepted")
	}
}
